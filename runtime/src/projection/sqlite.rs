//! Running a projection on SQLite: each batch of handler writes commits with the checkpoint in
//! one `BEGIN IMMEDIATE` transaction (SQLite's single writer), which also reads the checkpoint
//! again, so events at or below it are skipped: at-least-once delivery, exactly-once effect,
//! even with two runners. A lease (a row renewed while the runner runs) keeps one runner per
//! projection active; another takes over when it expires.
//!
//! Not yet on SQLite: the dead-letter queue and blue/green versions (a batch that keeps failing
//! stops the runner, its batch rolled back).

use std::future::Future;
use std::time::Duration;

use chrono::Utc;
use sqlx::{Row as _, SqliteConnection};

use super::Projection;
use super::status::{ProjectionStatus, RunnerError};
use crate::envelope::RecordedEvent;
use crate::error::Error;
use crate::store::{EventStore, FeedBatch, FeedPosition, FeedQuery, SqliteStore};

/// How long a lease lasts without renewal.
const LEASE_TTL: Duration = Duration::from_secs(10);

/// Runs one projection against a [`SqliteStore`].
#[derive(Debug)]
pub struct SqliteProjectionRunner<P> {
    store: SqliteStore,
    projection: P,
    batch_size: usize,
    poll_interval: Duration,
    lease_retry: Duration,
    max_retries: u32,
    retry_backoff: Duration,
    holder: String,
}

fn backend(error: sqlx::Error) -> Error {
    Error::Backend(Box::new(error))
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn millis_from_now(ahead: Duration) -> i64 {
    Utc::now().timestamp_millis() + i64::try_from(ahead.as_millis()).unwrap_or(i64::MAX / 2)
}

impl<P: Projection<Connection = SqliteConnection>> SqliteProjectionRunner<P> {
    /// A runner of `projection` on `store` (migrated).
    #[must_use]
    pub fn new(store: SqliteStore, projection: P) -> Self {
        Self {
            store,
            projection,
            batch_size: 500,
            poll_interval: Duration::from_millis(500),
            lease_retry: Duration::from_millis(500),
            max_retries: 3,
            retry_backoff: Duration::from_millis(100),
            holder: crate::Uuid::now_v7().to_string(),
        }
    }

    /// Events per transaction.
    #[must_use]
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// How often to look for new events when no wake-up comes.
    #[must_use]
    pub fn poll_interval(mut self, poll_interval: Duration) -> Self {
        self.poll_interval = poll_interval;
        self
    }

    /// How often a waiting runner tries to take the lease.
    #[must_use]
    pub fn lease_retry(mut self, lease_retry: Duration) -> Self {
        self.lease_retry = lease_retry;
        self
    }

    /// Retries of a failing batch, with doubling backoff, before the runner stops.
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

    /// The position the projection has processed up to.
    ///
    /// # Errors
    /// A store error.
    pub async fn checkpoint(&self) -> Result<FeedPosition, Error> {
        let mut connection = self.store.pool().acquire().await.map_err(backend)?;
        read_checkpoint::<P>(&mut connection).await
    }

    /// Applies a batch as delivered, in one transaction with the checkpoint: events at or below
    /// the checkpoint are skipped (applied before), the others handled in order, the `#[flush]`
    /// runs, and the checkpoint moves to `next`. Any failure rolls the whole batch back.
    /// Returns the events handled.
    ///
    /// # Errors
    /// [`RunnerError::Handler`] or [`RunnerError::Store`]; nothing of the batch is applied then.
    pub async fn apply_batch(
        &mut self,
        events: &[RecordedEvent],
        next: FeedPosition,
    ) -> Result<u64, RunnerError> {
        let mut transaction = self
            .store
            .pool()
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        let checkpoint = read_checkpoint::<P>(&mut transaction).await?;
        self.projection.discard();
        let mut handled = 0;
        for event in events.iter().filter(|e| e.feed_position() > checkpoint) {
            if let Err(cause) = self.projection.handle(event, &mut transaction).await {
                self.projection.discard();
                return Err(RunnerError::handler::<P>(cause));
            }
            handled += 1;
        }
        if let Err(cause) = self.projection.flush(&mut transaction).await {
            self.projection.discard();
            return Err(RunnerError::handler::<P>(cause));
        }
        let checkpoint = checkpoint.max(next);
        sqlx::query(
            "INSERT INTO projection_checkpoints (projection, version, position, updated_at)
             VALUES (?1, ?2, ?3, CURRENT_TIMESTAMP)
             ON CONFLICT (projection, version) DO UPDATE
                 SET position = excluded.position, updated_at = excluded.updated_at",
        )
        .bind(P::NAME)
        .bind(i64::from(P::VERSION))
        .bind(to_i64(checkpoint.position))
        .execute(&mut *transaction)
        .await
        .map_err(backend)?;
        transaction.commit().await.map_err(backend)?;
        self.projection.committed();
        Ok(handled)
    }

    async fn apply_with_retries(&mut self, batch: &FeedBatch) -> Result<u64, RunnerError> {
        let mut attempt = 0;
        loop {
            match self.apply_batch(&batch.events, batch.next).await {
                Err(RunnerError::Handler { cause, .. })
                    if cause.is_transient() && attempt < self.max_retries =>
                {
                    attempt += 1;
                    tracing::warn!(attempt, error = %cause, "projection batch failed; retrying");
                    tokio::time::sleep(self.retry_backoff * 2_u32.saturating_pow(attempt - 1))
                        .await;
                }
                result => return result,
            }
        }
    }

    /// Reads and applies one batch after the checkpoint; `None` when caught up.
    async fn step(&mut self) -> Result<Option<u64>, RunnerError> {
        let checkpoint = self.checkpoint().await?;
        let query = FeedQuery::after(checkpoint)
            .limit(self.batch_size)
            .event_types(P::EVENT_TYPES.iter().copied());
        let batch = self.store.read_feed(&query).await?;
        if batch.events.is_empty() && batch.next <= checkpoint {
            return Ok(None);
        }
        let span = tracing::debug_span!(
            "factum.projection.batch",
            projection = P::NAME,
            version = P::VERSION,
            events = batch.events.len(),
        );
        let handled =
            tracing::Instrument::instrument(self.apply_with_retries(&batch), span).await?;
        Ok((!batch.events.is_empty()).then_some(handled))
    }

    /// Applies every event after the checkpoint. Returns the events handled.
    ///
    /// # Errors
    /// As [`SqliteProjectionRunner::apply_batch`].
    pub async fn catch_up(&mut self) -> Result<u64, RunnerError> {
        let mut handled = 0;
        while let Some(batch) = self.step().await? {
            handled += batch;
        }
        Ok(handled)
    }

    /// Takes or renews the lease; whether this runner holds it.
    async fn lease(&self) -> Result<bool, Error> {
        let taken = sqlx::query(
            "INSERT INTO projection_leases (projection, version, holder, expires_at)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (projection, version) DO UPDATE
                 SET holder = excluded.holder, expires_at = excluded.expires_at
                 WHERE projection_leases.holder = excluded.holder
                    OR projection_leases.expires_at < ?5",
        )
        .bind(P::NAME)
        .bind(i64::from(P::VERSION))
        .bind(&self.holder)
        .bind(millis_from_now(LEASE_TTL))
        .bind(Utc::now().timestamp_millis())
        .execute(self.store.pool())
        .await
        .map_err(backend)?;
        Ok(taken.rows_affected() == 1)
    }

    async fn release(&self) {
        let released = sqlx::query(
            "DELETE FROM projection_leases WHERE projection = ?1 AND version = ?2 AND holder = ?3",
        )
        .bind(P::NAME)
        .bind(i64::from(P::VERSION))
        .bind(&self.holder)
        .execute(self.store.pool())
        .await;
        if let Err(error) = released {
            tracing::warn!(%error, "could not release the projection lease; it will expire");
        }
    }

    /// Runs the projection until `shutdown` completes: waits for the lease (one runner per
    /// projection and version at a time; another takes over when the holder stops renewing
    /// it), catches up, then follows new events (woken by appends through this store, else by
    /// polling). Shutdown lets the current batch finish. Returns the projection.
    ///
    /// # Errors
    /// [`RunnerError::Handler`] when a batch keeps failing, or a store error.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<P, RunnerError> {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut wakeups = self.store.wakeups();
        loop {
            if self.lease().await? {
                break;
            }
            tokio::select! {
                () = &mut shutdown => return Ok(self.projection),
                () = tokio::time::sleep(self.lease_retry) => {}
            }
        }
        let mut renewed = tokio::time::Instant::now();
        let result = loop {
            if renewed.elapsed() > LEASE_TTL / 3 {
                match self.lease().await {
                    Ok(true) => renewed = tokio::time::Instant::now(),
                    Ok(false) => {
                        tracing::warn!(projection = P::NAME, "projection lease lost; stopping");
                        break Ok(());
                    }
                    Err(error) => break Err(error.into()),
                }
            }
            wakeups.mark_seen();
            match self.step().await {
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(error) => break Err(error),
            }
            tokio::select! {
                () = &mut shutdown => break Ok(()),
                () = wakeups.changed() => {}
                () = tokio::time::sleep(self.poll_interval.min(LEASE_TTL / 3)) => {}
            }
        };
        self.release().await;
        result.map(|()| self.projection)
    }

    /// Where the projection stands: checkpoint, head, lag.
    ///
    /// # Errors
    /// A store error.
    pub async fn status(&self) -> Result<ProjectionStatus, Error> {
        let checkpoint = self.checkpoint().await?;
        let types = serde_json::to_string(P::EVENT_TYPES).unwrap_or_else(|_| "[]".to_owned());
        let row = sqlx::query(
            "SELECT (SELECT coalesce(max(position), 0) FROM events), count(*), min(recorded_at)
             FROM events
             WHERE position > ?1 AND event_type IN (SELECT value FROM json_each(?2))",
        )
        .bind(to_i64(checkpoint.position))
        .bind(types)
        .fetch_one(self.store.pool())
        .await
        .map_err(backend)?;
        let head = to_u64(row.try_get(0).map_err(backend)?);
        let oldest: Option<chrono::DateTime<Utc>> = row.try_get(2).map_err(backend)?;
        Ok(ProjectionStatus {
            name: P::NAME,
            version: P::VERSION,
            checkpoint,
            head: FeedPosition::new(head, head),
            event_lag: to_u64(row.try_get(1).map_err(backend)?),
            time_lag: oldest
                .and_then(|oldest| (Utc::now() - oldest).to_std().ok())
                .unwrap_or_default(),
            parked_streams: 0,
            parked_events: 0,
            state: None,
            progress: if head == 0 || checkpoint.position >= head {
                1.0
            } else {
                checkpoint.position as f64 / head as f64
            },
        })
    }
}

async fn read_checkpoint<P: Projection>(
    connection: &mut SqliteConnection,
) -> Result<FeedPosition, Error> {
    let position: Option<i64> = sqlx::query_scalar(
        "SELECT position FROM projection_checkpoints WHERE projection = ?1 AND version = ?2",
    )
    .bind(P::NAME)
    .bind(i64::from(P::VERSION))
    .fetch_optional(&mut *connection)
    .await
    .map_err(backend)?;
    let position = position.map_or(0, to_u64);
    Ok(FeedPosition::new(position, position))
}
