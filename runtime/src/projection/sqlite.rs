//! Running a projection on SQLite: each batch of handler writes commits with the checkpoint in
//! one `BEGIN IMMEDIATE` transaction (SQLite's single writer), which also reads the checkpoint
//! again, so events at or below it are skipped: at-least-once delivery, exactly-once effect,
//! even with two runners. A lock on the file `<database>-projection-<name>-v<version>.lock`,
//! held while a runner runs, keeps one runner per projection active; the operating system
//! releases it when the holder's process dies, and another takes over at once.
//!
//! A batch that keeps failing is isolated event by event: the failing event's stream is parked
//! in the dead-letter queue (it and the stream's later events wait there, in order) while other
//! streams flow on; `parked`, `retry_parked` and `skip_parked` work the queue. An unreachable
//! database parks nothing: the runner stops. Not yet on SQLite: blue/green versions.

use std::future::Future;
use std::time::Duration;

use chrono::Utc;
use sqlx::{Row as _, SqliteConnection};

use super::Projection;
use super::status::{ParkedStream, ProjectionStatus, RetryOutcome, RunnerError, is_outage};
use crate::envelope::RecordedEvent;
use crate::error::Error;
use crate::store::backend::to_i64;
use crate::store::sqlite::backend;

// Replaced by the generic runner core.
fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}
use crate::store::{EventStore, FeedBatch, FeedPosition, FeedQuery, SqliteStore};

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
    dead_letters: bool,
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
            dead_letters: true,
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

    /// Whether a failing stream is parked in the dead-letter queue (the default) or stops the
    /// runner.
    #[must_use]
    pub fn dead_letters(mut self, enabled: bool) -> Self {
        self.dead_letters = enabled;
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
        let fresh: Vec<&RecordedEvent> = events
            .iter()
            .filter(|e| e.feed_position() > checkpoint)
            .collect();
        let parked = parked_streams::<P>(&mut transaction, &fresh).await?;
        self.projection.discard();
        let mut handled = 0;
        let mut behind = Vec::new();
        for event in fresh {
            if parked.contains(&event.stream_id) {
                behind.push(event);
                continue;
            }
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
        for event in behind {
            park::<P>(&mut transaction, event, None, 0).await?;
        }
        save_checkpoint::<P>(&mut transaction, checkpoint.max(next)).await?;
        transaction.commit().await.map_err(backend)?;
        self.projection.committed();
        Ok(handled)
    }

    async fn apply_with_retries(
        &mut self,
        events: &[RecordedEvent],
        next: FeedPosition,
    ) -> Result<u64, RunnerError> {
        let mut attempt = 0;
        loop {
            match self.apply_batch(events, next).await {
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

    /// Whether a failure parks its stream rather than stopping the runner: dead-lettering is on
    /// and the failure is the event's, not the database's.
    fn parks(&self, cause: &crate::projection::HandlerError) -> bool {
        self.dead_letters && !is_outage(cause)
    }

    /// Applies a batch, isolating (and parking) the failing event when it keeps failing.
    async fn apply_checked(&mut self, batch: &FeedBatch) -> Result<u64, RunnerError> {
        match self.apply_with_retries(&batch.events, batch.next).await {
            Err(RunnerError::Handler { cause, .. }) if self.parks(&cause) => {
                tracing::warn!(error = %cause, "projection batch kept failing; isolating the failing event");
                let mut handled = 0;
                for event in &batch.events {
                    match self
                        .apply_with_retries(std::slice::from_ref(event), event.feed_position())
                        .await
                    {
                        Ok(one) => handled += one,
                        Err(RunnerError::Handler { cause, .. }) if self.parks(&cause) => {
                            self.park_failed(event, &cause).await?;
                        }
                        Err(error) => return Err(error),
                    }
                }
                Ok(handled + self.apply_batch(&[], batch.next).await?)
            }
            result => result,
        }
    }

    /// Parks `event`'s stream at `event`, which failed with `cause`, moving the checkpoint past
    /// it, in one transaction.
    async fn park_failed(
        &self,
        event: &RecordedEvent,
        cause: &crate::projection::HandlerError,
    ) -> Result<(), Error> {
        let mut transaction = self
            .store
            .pool()
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        let checkpoint = read_checkpoint::<P>(&mut transaction).await?;
        if event.feed_position() <= checkpoint {
            return Ok(()); // another runner got past it meanwhile
        }
        let attempts = if cause.is_transient() {
            self.max_retries.saturating_add(1)
        } else {
            1
        };
        park::<P>(&mut transaction, event, Some(&cause.to_string()), attempts).await?;
        save_checkpoint::<P>(&mut transaction, event.feed_position()).await?;
        transaction.commit().await.map_err(backend)?;
        tracing::error!(
            projection = P::NAME,
            stream = %event.stream_id,
            stream_version = event.stream_version,
            error = %cause,
            "projection parked a stream: its later events wait in the dead-letter queue"
        );
        Ok(())
    }

    /// The streams parked in this projection's dead-letter queue, oldest first.
    ///
    /// # Errors
    /// A store error.
    pub async fn parked(&self) -> Result<Vec<ParkedStream>, Error> {
        let rows = sqlx::query(
            "SELECT d.stream_id, d.stream_version, d.error, d.attempts, d.parked_at,
                    (SELECT count(*) FROM projection_dead_letters c
                     WHERE c.projection = d.projection AND c.version = d.version
                       AND c.stream_id = d.stream_id AND c.status = 'parked')
             FROM projection_dead_letters d
             WHERE d.projection = ?1 AND d.version = ?2 AND d.status = 'parked'
               AND d.stream_version = (
                   SELECT min(f.stream_version) FROM projection_dead_letters f
                   WHERE f.projection = d.projection AND f.version = d.version
                     AND f.stream_id = d.stream_id AND f.status = 'parked')
             ORDER BY d.parked_at, d.stream_id",
        )
        .bind(P::NAME)
        .bind(i64::from(P::VERSION))
        .fetch_all(self.store.pool())
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|row| {
                Ok(ParkedStream {
                    stream_id: row.try_get(0)?,
                    first_version: to_u64(row.try_get(1)?),
                    error: row.try_get(2)?,
                    attempts: u32::try_from(row.try_get::<i64, _>(3)?).unwrap_or(0),
                    parked_at: row.try_get(4)?,
                    events: to_u64(row.try_get(5)?),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(backend)
    }

    /// Handles a parked stream's events again, in order, after a fix: each applied event leaves
    /// the queue in the same transaction; the first that fails stops the retry (it and the
    /// later ones stay parked, with the new error).
    ///
    /// # Errors
    /// A store error.
    pub async fn retry_parked(&mut self, stream_id: &str) -> Result<RetryOutcome, Error> {
        let mut handled = 0;
        loop {
            let mut transaction = self
                .store
                .pool()
                .begin_with("BEGIN IMMEDIATE")
                .await
                .map_err(backend)?;
            let Some(stream_version) = first_parked::<P>(&mut transaction, stream_id).await? else {
                transaction.commit().await.map_err(backend)?;
                return Ok(RetryOutcome::Drained { handled });
            };
            let event = self
                .store
                .read_stream(stream_id, stream_version..=stream_version)
                .await?
                .pop()
                .ok_or_else(|| {
                    Error::Backend(
                        format!(
                            "the dead-letter queue of `{}` names {stream_id}@{stream_version}, which the store does not hold",
                            P::NAME
                        )
                        .into(),
                    )
                })?;
            self.projection.discard();
            let mut result = self.projection.handle(&event, &mut transaction).await;
            if result.is_ok() {
                result = self.projection.flush(&mut transaction).await;
            }
            if let Err(error) = result {
                self.projection.discard();
                drop(transaction);
                sqlx::query(
                    "UPDATE projection_dead_letters
                     SET error = ?5, attempts = attempts + 1, updated_at = CURRENT_TIMESTAMP
                     WHERE projection = ?1 AND version = ?2 AND stream_id = ?3
                       AND stream_version = ?4",
                )
                .bind(P::NAME)
                .bind(i64::from(P::VERSION))
                .bind(stream_id)
                .bind(to_i64(stream_version))
                .bind(error.to_string())
                .execute(self.store.pool())
                .await
                .map_err(backend)?;
                return Ok(RetryOutcome::Stopped {
                    handled,
                    stream_version,
                    error,
                });
            }
            sqlx::query(
                "DELETE FROM projection_dead_letters
                 WHERE projection = ?1 AND version = ?2 AND stream_id = ?3 AND stream_version = ?4",
            )
            .bind(P::NAME)
            .bind(i64::from(P::VERSION))
            .bind(stream_id)
            .bind(to_i64(stream_version))
            .execute(&mut *transaction)
            .await
            .map_err(backend)?;
            transaction.commit().await.map_err(backend)?;
            self.projection.committed();
            handled += 1;
        }
    }

    /// Skips the first parked event of a stream: it stays in the queue, marked skipped, and is
    /// never applied. Returns its version (`None`: the stream is not parked).
    ///
    /// # Errors
    /// A store error.
    pub async fn skip_parked(&mut self, stream_id: &str) -> Result<Option<u64>, Error> {
        let mut transaction = self
            .store
            .pool()
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        let Some(stream_version) = first_parked::<P>(&mut transaction, stream_id).await? else {
            return Ok(None);
        };
        sqlx::query(
            "UPDATE projection_dead_letters SET status = 'skipped', updated_at = CURRENT_TIMESTAMP
             WHERE projection = ?1 AND version = ?2 AND stream_id = ?3 AND stream_version = ?4",
        )
        .bind(P::NAME)
        .bind(i64::from(P::VERSION))
        .bind(stream_id)
        .bind(to_i64(stream_version))
        .execute(&mut *transaction)
        .await
        .map_err(backend)?;
        transaction.commit().await.map_err(backend)?;
        Ok(Some(stream_version))
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
        let handled = tracing::Instrument::instrument(self.apply_checked(&batch), span).await?;
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

    /// Runs the projection until `shutdown` completes: waits for the lease (one runner per
    /// projection and version at a time; another takes over when the holder stops or its
    /// process dies), catches up, then follows new events (woken by appends through this store, else by
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
        let lock = format!("projection-{}-v{}", P::NAME, P::VERSION);
        let _lease = loop {
            if let Some(lease) = self.store.try_lock(&lock)? {
                break lease;
            }
            tokio::select! {
                () = &mut shutdown => return Ok(self.projection),
                () = tokio::time::sleep(self.lease_retry) => {}
            }
        };
        loop {
            wakeups.mark_seen();
            if self.step().await?.is_some() {
                continue;
            }
            tokio::select! {
                () = &mut shutdown => return Ok(self.projection),
                () = wakeups.changed() => {}
                () = tokio::time::sleep(self.poll_interval) => {}
            }
        }
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
        let parked = self.parked().await?;
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
            parked_streams: parked.len() as u64,
            parked_events: parked.iter().map(|p| p.events).sum(),
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

async fn save_checkpoint<P: Projection>(
    connection: &mut SqliteConnection,
    checkpoint: FeedPosition,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO projection_checkpoints (projection, version, position, updated_at)
         VALUES (?1, ?2, ?3, CURRENT_TIMESTAMP)
         ON CONFLICT (projection, version) DO UPDATE
             SET position = excluded.position, updated_at = excluded.updated_at",
    )
    .bind(P::NAME)
    .bind(i64::from(P::VERSION))
    .bind(to_i64(checkpoint.position))
    .execute(&mut *connection)
    .await
    .map_err(backend)?;
    Ok(())
}

/// Those of `events`' streams that are parked.
async fn parked_streams<P: Projection>(
    connection: &mut SqliteConnection,
    events: &[&RecordedEvent],
) -> Result<Vec<String>, Error> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let streams: Vec<&str> = events.iter().map(|e| e.stream_id.as_str()).collect();
    let streams = serde_json::to_string(&streams).map_err(|e| Error::Backend(Box::new(e)))?;
    sqlx::query_scalar(
        "SELECT DISTINCT stream_id FROM projection_dead_letters
         WHERE projection = ?1 AND version = ?2 AND status = 'parked'
           AND stream_id IN (SELECT value FROM json_each(?3))",
    )
    .bind(P::NAME)
    .bind(i64::from(P::VERSION))
    .bind(streams)
    .fetch_all(&mut *connection)
    .await
    .map_err(backend)
}

/// Adds an event to the dead-letter queue (in the caller's transaction): the one that failed
/// (with its error), or one waiting behind it.
async fn park<P: Projection>(
    connection: &mut SqliteConnection,
    event: &RecordedEvent,
    error: Option<&str>,
    attempts: u32,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO projection_dead_letters
             (projection, version, stream_id, stream_version, event_id, event_type, position,
              error, attempts, parked_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT DO NOTHING",
    )
    .bind(P::NAME)
    .bind(i64::from(P::VERSION))
    .bind(&event.stream_id)
    .bind(to_i64(event.stream_version))
    .bind(event.event_id.to_string())
    .bind(&event.event_type)
    .bind(to_i64(event.global_position))
    .bind(error)
    .bind(i64::from(attempts))
    .bind(Utc::now())
    .execute(&mut *connection)
    .await
    .map_err(backend)?;
    Ok(())
}

/// The version of a stream's first parked event.
async fn first_parked<P: Projection>(
    connection: &mut SqliteConnection,
    stream_id: &str,
) -> Result<Option<u64>, Error> {
    let version: Option<i64> = sqlx::query_scalar(
        "SELECT min(stream_version) FROM projection_dead_letters
         WHERE projection = ?1 AND version = ?2 AND stream_id = ?3 AND status = 'parked'",
    )
    .bind(P::NAME)
    .bind(i64::from(P::VERSION))
    .bind(stream_id)
    .fetch_one(&mut *connection)
    .await
    .map_err(backend)?;
    Ok(version.map(to_u64))
}
