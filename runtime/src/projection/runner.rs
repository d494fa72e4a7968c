//! Running a projection on PostgreSQL: one active instance per projection across processes (an
//! advisory-lock lease), batches committed with the checkpoint, catch-up then live following.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, Connection as _, PgConnection, Row as _};

use super::status::{ProjectionStatus, RunnerError, VersionState, is_outage};
use super::{HandlerError, Projection};
use crate::envelope::RecordedEvent;
use crate::error::Error;
use crate::store::{EventStore, FeedBatch, FeedPosition, FeedQuery, PostgresStore};

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
    dead_letters: bool,
    /// The checkpoint as this runner last committed it (`None`: read it from the database).
    position: Option<FeedPosition>,
    /// The batch after `position`, read while the previous one was being applied.
    read_ahead: Option<(FeedPosition, FeedBatch)>,
    /// Whether this version is building beside the active one (side effects off).
    replaying: bool,
    pub(super) sql: Sql,
}

#[derive(Debug)]
pub(super) struct Sql {
    ensure_checkpoint: String,
    /// The checkpoint, locked, and which of the given streams are parked.
    lock_checkpoint: String,
    inline_marks: String,
    save_checkpoint: String,
    read_checkpoint: String,
    status: String,
    /// Parks events (columns as arrays), ignoring those already parked.
    pub(super) park: String,
    pub(super) list_parked: String,
    pub(super) first_parked: String,
    pub(super) unpark: String,
    pub(super) record_failure: String,
    pub(super) skip: String,
    /// Claims side effects by event id to run them; returns those not decided before (or
    /// skipped by another version's replay).
    claim_side_effects: String,
    /// Records side effects skipped by a replay.
    skip_side_effects: String,
}

impl Sql {
    fn new(schema: &str) -> Self {
        let s = format!("\"{schema}\"");
        Self {
            ensure_checkpoint: format!(
                "INSERT INTO {s}.projection_checkpoints (projection, version, tx, position)
                 VALUES ($1, $2, 0, 0) ON CONFLICT DO NOTHING"
            ),
            inline_marks: super::inline::inline_marks_sql(schema),
            lock_checkpoint: format!(
                "SELECT c.tx, c.position, ARRAY(
                     SELECT DISTINCT d.stream_id FROM {s}.projection_dead_letters d
                     WHERE d.projection = $1 AND d.version = $2 AND d.status = 'parked'
                       AND d.stream_id = ANY ($3))
                 FROM {s}.projection_checkpoints c
                 WHERE c.projection = $1 AND c.version = $2 FOR UPDATE OF c"
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
                        count(*), min(e.recorded_at),
                        (SELECT count(DISTINCT stream_id) FROM {s}.projection_dead_letters
                         WHERE projection = $4 AND version = $5 AND status = 'parked'),
                        (SELECT count(*) FROM {s}.projection_dead_letters
                         WHERE projection = $4 AND version = $5 AND status = 'parked')
                 FROM {s}.events e
                 WHERE (e.tx, e.position) > ($1::text::xid8, $2) AND e.event_type = ANY ($3)"
            ),
            park: format!(
                "INSERT INTO {s}.projection_dead_letters
                     (projection, version, stream_id, stream_version, event_id, event_type, tx,
                      position, error, attempts)
                 SELECT $1, $2, * FROM UNNEST($3::text[], $4::int8[], $5::uuid[], $6::text[],
                                              $7::int8[], $8::int8[], $9::text[], $10::int4[])
                 ON CONFLICT DO NOTHING"
            ),
            list_parked: format!(
                "SELECT stream_id, min(stream_version), count(*),
                        (array_agg(error ORDER BY stream_version))[1],
                        (array_agg(attempts ORDER BY stream_version))[1],
                        min(parked_at)
                 FROM {s}.projection_dead_letters
                 WHERE projection = $1 AND version = $2 AND status = 'parked'
                 GROUP BY stream_id ORDER BY min(parked_at), stream_id"
            ),
            first_parked: format!(
                "SELECT stream_version FROM {s}.projection_dead_letters
                 WHERE projection = $1 AND version = $2 AND stream_id = $3 AND status = 'parked'
                 ORDER BY stream_version LIMIT 1"
            ),
            unpark: format!(
                "DELETE FROM {s}.projection_dead_letters
                 WHERE projection = $1 AND version = $2 AND stream_id = $3 AND stream_version = $4"
            ),
            record_failure: format!(
                "UPDATE {s}.projection_dead_letters
                 SET error = $5, attempts = attempts + 1, updated_at = now()
                 WHERE projection = $1 AND version = $2 AND stream_id = $3 AND stream_version = $4"
            ),
            claim_side_effects: format!(
                "INSERT INTO {s}.projection_side_effects AS c (projection, event_id, version, status)
                 SELECT $1, id, $2, 'run' FROM UNNEST($3::uuid[]) AS ids (id)
                 ON CONFLICT (projection, event_id) DO UPDATE
                     SET version = excluded.version, status = 'run', decided_at = now()
                     WHERE c.status = 'skipped' AND c.version <> excluded.version
                 RETURNING event_id"
            ),
            skip_side_effects: format!(
                "INSERT INTO {s}.projection_side_effects (projection, event_id, version, status)
                 SELECT $1, id, $2, 'skipped' FROM UNNEST($3::uuid[]) AS ids (id)
                 ON CONFLICT (projection, event_id) DO NOTHING"
            ),
            skip: format!(
                "UPDATE {s}.projection_dead_letters SET status = 'skipped', updated_at = now()
                 WHERE projection = $1 AND version = $2 AND stream_id = $3 AND stream_version = $4"
            ),
        }
    }
}

impl<P: Projection<Connection = PgConnection>> ProjectionRunner<P> {
    /// A runner of `projection` on `store` (whose migrations include the projection tables).
    pub fn new(store: PostgresStore, projection: P) -> Self {
        let sql = Sql::new(store.schema());
        Self {
            store,
            projection,
            batch_size: 500,
            poll_interval: Duration::from_millis(500),
            lease_retry: Duration::from_millis(500),
            max_retries: 3,
            retry_backoff: Duration::from_millis(100),
            dead_letters: true,
            position: None,
            read_ahead: None,
            replaying: false,
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

    /// Whether a stream whose event keeps failing is parked in the dead-letter queue so that
    /// other streams flow on (the default), or the runner stops instead.
    #[must_use]
    pub fn dead_letters(mut self, enabled: bool) -> Self {
        self.dead_letters = enabled;
        self
    }

    pub(super) fn store(&self) -> &PostgresStore {
        &self.store
    }

    pub(super) fn set_replaying(&mut self, replaying: bool) {
        self.replaying = replaying;
    }

    pub(super) fn projection_mut(&mut self) -> &mut P {
        &mut self.projection
    }

    /// The projection.
    pub fn projection(&self) -> &P {
        &self.projection
    }

    pub(super) fn fail(&self, error: sqlx::Error) -> Error {
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
    /// the checkpoint are skipped (they were applied before), events of parked streams join
    /// their stream in the dead-letter queue, the others are handled in order, the `#[flush]`
    /// runs, and the checkpoint moves to `next`. Any failure rolls the whole batch back.
    ///
    /// # Errors
    /// [`RunnerError::Handler`] or [`RunnerError::Store`]; nothing of the batch is applied then.
    pub async fn apply_batch(
        &mut self,
        events: &[RecordedEvent],
        next: FeedPosition,
    ) -> Result<BatchOutcome, RunnerError> {
        self.position = None;
        let outcome = self.apply_from(None, events, next).await?;
        Ok(outcome.unwrap_or_default())
    }

    /// [`ProjectionRunner::apply_batch`] of a batch read after `after`: when the checkpoint is
    /// found below `after` (it was moved back meanwhile), applying the batch would leave a gap,
    /// so nothing is done and `None` returned.
    async fn apply_from(
        &mut self,
        after: Option<FeedPosition>,
        events: &[RecordedEvent],
        next: FeedPosition,
    ) -> Result<Option<BatchOutcome>, RunnerError> {
        let mut transaction = self.store.pool().begin().await.map_err(|e| self.fail(e))?;
        let (checkpoint, parked) = self.lock_checkpoint(&mut transaction, events).await?;
        if after.is_some_and(|after| checkpoint < after) {
            return Ok(None);
        }
        let mut outcome = BatchOutcome::default();
        let mut to_park = Vec::new();
        let inline = self.inline_marks(&mut transaction, events).await?;
        let fresh = |e: &&RecordedEvent| {
            e.feed_position() > checkpoint
                && inline
                    .get(&e.stream_id)
                    .is_none_or(|&applied| e.stream_version > applied)
        };
        let claimed = self
            .claim_side_effects(&mut transaction, events, checkpoint, &parked)
            .await?;
        self.projection.discard();
        for event in events.iter().filter(fresh) {
            if parked.contains(&event.stream_id) {
                to_park.push(DeadLetter::behind(event));
                continue;
            }
            if P::SIDE_EFFECTS.contains(&event.event_type.as_str())
                && (self.replaying || !claimed.contains(&event.event_id))
            {
                continue; // replaying, or its side effect already ran
            }
            if let Err(cause) = self.projection.handle(event, &mut transaction).await {
                self.projection.discard();
                return Err(RunnerError::handler::<P>(cause));
            }
            outcome.handled += 1;
        }
        if let Err(cause) = self.projection.flush(&mut transaction).await {
            self.projection.discard();
            return Err(RunnerError::handler::<P>(cause));
        }
        if !to_park.is_empty() {
            outcome.parked = to_park.len() as u64;
            self.park(&mut transaction, &to_park).await?;
        }
        self.save_checkpoint(&mut transaction, checkpoint.max(next))
            .await?;
        transaction.commit().await.map_err(|e| self.fail(e))?;
        self.projection.committed();
        Ok(Some(outcome))
    }

    /// For an inline projection, how far inline applications went in each of `events`'
    /// streams (those events are skipped); nothing otherwise.
    async fn inline_marks(
        &self,
        transaction: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<std::collections::HashMap<String, u64>, Error> {
        if !P::INLINE || events.is_empty() {
            return Ok(std::collections::HashMap::new());
        }
        let mut streams: Vec<&str> = events.iter().map(|e| e.stream_id.as_str()).collect();
        streams.sort_unstable();
        streams.dedup();
        super::inline::inline_marks::<P>(&self.store, &self.sql.inline_marks, transaction, &streams)
            .await
    }

    /// Claims the side effects of the batch's fresh events of `#[handle(side_effects)]` types
    /// (in the batch's transaction): returns the ids not claimed before. While replaying, the
    /// claims are recorded too (and nothing returned): an event's side effect is decided once,
    /// run live or skipped by a rebuild, never run by a later redelivery.
    async fn claim_side_effects(
        &self,
        transaction: &mut PgConnection,
        events: &[RecordedEvent],
        checkpoint: FeedPosition,
        parked: &[String],
    ) -> Result<std::collections::HashSet<crate::Uuid>, Error> {
        if P::SIDE_EFFECTS.is_empty() {
            return Ok(std::collections::HashSet::new());
        }
        let ids: Vec<crate::Uuid> = events
            .iter()
            .filter(|e| {
                e.feed_position() > checkpoint
                    && P::SIDE_EFFECTS.contains(&e.event_type.as_str())
                    && !parked.contains(&e.stream_id)
            })
            .map(|e| e.event_id)
            .collect();
        if ids.is_empty() {
            return Ok(std::collections::HashSet::new());
        }
        if self.replaying {
            sqlx::query(AssertSqlSafe(self.sql.skip_side_effects.clone()))
                .bind(P::NAME)
                .bind(version(P::VERSION))
                .bind(ids)
                .execute(&mut *transaction)
                .await
                .map_err(|e| self.fail(e))?;
            return Ok(std::collections::HashSet::new());
        }
        let claimed: Vec<crate::Uuid> =
            sqlx::query_scalar(AssertSqlSafe(self.sql.claim_side_effects.clone()))
                .bind(P::NAME)
                .bind(version(P::VERSION))
                .bind(ids)
                .fetch_all(&mut *transaction)
                .await
                .map_err(|e| self.fail(e))?;
        Ok(claimed.into_iter().collect())
    }

    /// Locks the projection's checkpoint row for the transaction (so concurrent instances, a
    /// lease lost to a network partition say, take turns, each skipping what the other did),
    /// creating it at the start when missing. Returns it with those of `events`' streams that
    /// are parked.
    pub(super) async fn lock_checkpoint(
        &self,
        transaction: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<(FeedPosition, Vec<String>), Error> {
        let mut streams: Vec<&str> = events.iter().map(|e| e.stream_id.as_str()).collect();
        streams.sort_unstable();
        streams.dedup();
        for _ in 0..2 {
            let row = sqlx::query(AssertSqlSafe(self.sql.lock_checkpoint.clone()))
                .bind(P::NAME)
                .bind(version(P::VERSION))
                .bind(&streams)
                .fetch_optional(&mut *transaction)
                .await
                .map_err(|e| self.fail(e))?;
            if let Some(row) = row {
                let checkpoint = position(&row).map_err(|e| self.fail(e))?;
                let parked: Vec<String> = row.try_get(2).map_err(|e| self.fail(e))?;
                return Ok((checkpoint, parked));
            }
            sqlx::query(AssertSqlSafe(self.sql.ensure_checkpoint.clone()))
                .bind(P::NAME)
                .bind(version(P::VERSION))
                .execute(&mut *transaction)
                .await
                .map_err(|e| self.fail(e))?;
        }
        Err(Error::Backend(
            format!(
                "the checkpoint of projection `{}` cannot be created",
                P::NAME
            )
            .into(),
        ))
    }

    pub(super) async fn save_checkpoint(
        &self,
        transaction: &mut PgConnection,
        checkpoint: FeedPosition,
    ) -> Result<(), Error> {
        sqlx::query(AssertSqlSafe(self.sql.save_checkpoint.clone()))
            .bind(P::NAME)
            .bind(version(P::VERSION))
            .bind(to_i64(checkpoint.tx))
            .bind(to_i64(checkpoint.position))
            .execute(&mut *transaction)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    /// Adds events to the dead-letter queue (in the caller's transaction).
    async fn park(
        &self,
        transaction: &mut PgConnection,
        letters: &[DeadLetter<'_>],
    ) -> Result<(), Error> {
        let column = |f: fn(&DeadLetter<'_>) -> i64| letters.iter().map(f).collect::<Vec<_>>();
        sqlx::query(AssertSqlSafe(self.sql.park.clone()))
            .bind(P::NAME)
            .bind(version(P::VERSION))
            .bind(
                letters
                    .iter()
                    .map(|l| l.event.stream_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(column(|l| to_i64(l.event.stream_version)))
            .bind(letters.iter().map(|l| l.event.event_id).collect::<Vec<_>>())
            .bind(
                letters
                    .iter()
                    .map(|l| l.event.event_type.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(column(|l| to_i64(l.event.tx)))
            .bind(column(|l| to_i64(l.event.global_position)))
            .bind(letters.iter().map(|l| l.error.clone()).collect::<Vec<_>>())
            .bind(letters.iter().map(|l| l.attempts).collect::<Vec<_>>())
            .execute(&mut *transaction)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    /// Applies a batch, retrying it (with doubling backoff) while the failure may be transient.
    async fn apply_with_retries(
        &mut self,
        after: Option<FeedPosition>,
        events: &[RecordedEvent],
        next: FeedPosition,
    ) -> Result<Option<BatchOutcome>, RunnerError> {
        let mut attempt = 0;
        loop {
            match self.apply_from(after, events, next).await {
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

    /// Applies a batch read after `after`, isolating (and parking) the failing event when it
    /// keeps failing. `None`: the checkpoint was moved back meanwhile, nothing was done.
    async fn apply_checked(
        &mut self,
        after: FeedPosition,
        batch: &FeedBatch,
    ) -> Result<Option<BatchOutcome>, RunnerError> {
        match self
            .apply_with_retries(Some(after), &batch.events, batch.next)
            .await
        {
            Err(RunnerError::Handler { cause, .. }) if self.parks(&cause) => {
                tracing::warn!(error = %cause, "projection batch kept failing; isolating the failing event");
                self.isolate(&batch.events, batch.next).await.map(Some)
            }
            result => result,
        }
    }

    /// Whether a failure parks its stream rather than stopping the runner: dead-lettering is on
    /// and the failure is the event's, not the database's (an outage parks nothing).
    fn parks(&self, cause: &HandlerError) -> bool {
        self.dead_letters && !is_outage(cause)
    }

    /// After a batch kept failing: applies its events one at a time, so the failing one is
    /// found; its stream is parked (the event and the stream's later events go to the
    /// dead-letter queue) and every other event is applied.
    async fn isolate(
        &mut self,
        events: &[RecordedEvent],
        next: FeedPosition,
    ) -> Result<BatchOutcome, RunnerError> {
        let mut outcome = BatchOutcome::default();
        for event in events {
            match self
                .apply_with_retries(None, std::slice::from_ref(event), event.feed_position())
                .await
            {
                Ok(one) => outcome += one.unwrap_or_default(),
                Err(RunnerError::Handler { cause, .. }) if self.parks(&cause) => {
                    outcome += self.park_failed(event, &cause).await?;
                }
                Err(error) => return Err(error),
            }
        }
        outcome += self.apply_from(None, &[], next).await?.unwrap_or_default();
        Ok(outcome)
    }

    /// Parks `event`'s stream at `event`, which failed with `cause`, moving the checkpoint past
    /// it, in one transaction.
    async fn park_failed(
        &mut self,
        event: &RecordedEvent,
        cause: &HandlerError,
    ) -> Result<BatchOutcome, RunnerError> {
        let mut transaction = self.store.pool().begin().await.map_err(|e| self.fail(e))?;
        let (checkpoint, _) = self
            .lock_checkpoint(&mut transaction, std::slice::from_ref(event))
            .await?;
        if event.feed_position() <= checkpoint {
            return Ok(BatchOutcome::default()); // another instance got past it meanwhile
        }
        let retries = if cause.is_transient() {
            self.max_retries
        } else {
            0
        };
        let attempts = i32::try_from(retries.saturating_add(1)).unwrap_or(i32::MAX);
        let letter = DeadLetter {
            event,
            error: Some(cause.to_string()),
            attempts,
        };
        self.park(&mut transaction, &[letter]).await?;
        self.save_checkpoint(&mut transaction, event.feed_position())
            .await?;
        transaction.commit().await.map_err(|e| self.fail(e))?;
        tracing::error!(
            projection = P::NAME,
            version = P::VERSION,
            stream = %event.stream_id,
            stream_version = event.stream_version,
            error = %cause,
            "projection parked a stream: its later events wait in the dead-letter queue"
        );
        Ok(BatchOutcome {
            handled: 0,
            parked: 1,
        })
    }

    /// The next batch of the projection's events after `after`.
    fn feed_query(&self, after: FeedPosition) -> FeedQuery {
        FeedQuery::after(after)
            .limit(self.batch_size)
            .event_types(P::EVENT_TYPES.iter().copied())
    }

    /// Reads and applies one batch after the checkpoint, retrying a failing batch, then
    /// isolating (and parking) the failing event. While a full batch is applied, the next one
    /// is read on another connection.
    async fn step(&mut self) -> Result<Step, RunnerError> {
        let checkpoint = match self.position {
            Some(position) => position,
            None => self.checkpoint().await?,
        };
        let batch = match self.read_ahead.take() {
            Some((after, batch)) if after == checkpoint => batch,
            _ => self.store.read_feed(&self.feed_query(checkpoint)).await?,
        };
        if batch.events.is_empty() && batch.next <= checkpoint {
            // Idle: read the checkpoint again next time, so a reset is noticed.
            self.position = None;
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
        let ahead = (batch.events.len() >= self.batch_size)
            .then(|| (self.store.clone(), self.feed_query(batch.next)));
        let read_ahead = async move {
            match ahead {
                Some((store, query)) => Some(store.read_feed(&query).await),
                None => None,
            }
        };
        let (applied, ahead) = tokio::join!(self.apply_checked(checkpoint, &batch), read_ahead);
        let outcome = match applied {
            Ok(Some(outcome)) => outcome,
            Ok(None) => {
                tracing::info!("the checkpoint moved back: reading from it again");
                self.position = None;
                return Ok(Step::Applied(BatchOutcome::default()));
            }
            Err(error) => {
                self.position = None;
                return Err(error);
            }
        };
        // Caught up (an empty batch only moved the checkpoint): read it again next time.
        self.position = (!batch.events.is_empty()).then(|| checkpoint.max(batch.next));
        if let Some(Ok(ahead)) = ahead {
            self.read_ahead = Some((batch.next, ahead));
        }
        let time_lag = batch
            .events
            .last()
            .and_then(|last| (Utc::now() - last.recorded_at).to_std().ok())
            .unwrap_or_default();
        tracing::debug!(
            handled = outcome.handled,
            parked = outcome.parked,
            next = %batch.next,
            time_lag_ms = u64::try_from(time_lag.as_millis()).unwrap_or(u64::MAX),
            "projection batch applied"
        );
        Ok(if batch.events.is_empty() {
            Step::CaughtUp {
                held_back: batch.held_back,
            }
        } else {
            Step::Applied(outcome)
        })
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
                Step::Applied(outcome) => handled += outcome.handled,
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
        let mut state = self.register().await?;
        if state == VersionState::Retired {
            tracing::warn!(
                projection = P::NAME,
                version = P::VERSION,
                "a newer version of the projection is active: this one does not run"
            );
            drop(lease);
            return Ok(self.projection);
        }
        let mut checked = std::time::Instant::now();
        let mut wakeups = self.store.wakeups();
        let result = loop {
            wakeups.mark_seen();
            let wait = match self.step().await {
                Ok(Step::Applied(_)) => None,
                Ok(Step::CaughtUp { held_back: true }) => Some(Duration::from_millis(5)),
                Ok(Step::CaughtUp { held_back: false }) => {
                    if state == VersionState::Building {
                        match self.switch_over().await {
                            Ok(true) => {
                                state = VersionState::Active;
                                self.replaying = false;
                            }
                            Ok(false) => {
                                tracing::warn!("the version was retired while building");
                                break Ok(());
                            }
                            Err(error) => break Err(error.into()),
                        }
                    }
                    Some(self.poll_interval)
                }
                Err(error) => break Err(error),
            };
            // An active version stops once a newer one has switched over.
            if state == VersionState::Active && (wait.is_some() || checked.elapsed() > RETIRE_CHECK)
            {
                checked = std::time::Instant::now();
                match self.version_state().await {
                    Ok(Some(VersionState::Retired)) => {
                        tracing::info!(
                            projection = P::NAME,
                            version = P::VERSION,
                            "a newer version switched over: this one is retired and stops"
                        );
                        break Ok(());
                    }
                    Ok(_) => {}
                    Err(error) => break Err(error.into()),
                }
            }
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
            .bind(P::NAME)
            .bind(version(P::VERSION))
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
            parked_streams: to_u64(row.try_get(4).map_err(get)?),
            parked_events: to_u64(row.try_get(5).map_err(get)?),
            state: self.version_state().await?,
            progress: if head.position == 0 || checkpoint >= head {
                1.0
            } else {
                (checkpoint.position as f64 / head.position as f64).min(1.0)
            },
        })
    }
}

/// How often a busy active version checks whether a newer one has switched over.
const RETIRE_CHECK: Duration = Duration::from_secs(1);

/// Whether the shutdown future has completed, without waiting.
fn futures_poll_now(shutdown: std::pin::Pin<&mut (impl Future<Output = ()> + Send)>) -> bool {
    let waker = std::task::Waker::noop();
    let mut context = std::task::Context::from_waker(waker);
    shutdown.poll(&mut context).is_ready()
}

/// What a batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchOutcome {
    /// Events handled.
    pub handled: u64,
    /// Events that went to the dead-letter queue.
    pub parked: u64,
}

impl std::ops::AddAssign for BatchOutcome {
    fn add_assign(&mut self, other: Self) {
        self.handled += other.handled;
        self.parked += other.parked;
    }
}

/// An event on its way to the dead-letter queue: the one that failed (with its error) or one
/// behind it in a parked stream.
struct DeadLetter<'a> {
    event: &'a RecordedEvent,
    error: Option<String>,
    attempts: i32,
}

impl<'a> DeadLetter<'a> {
    fn behind(event: &'a RecordedEvent) -> Self {
        Self {
            event,
            error: None,
            attempts: 0,
        }
    }
}

enum Step {
    Applied(BatchOutcome),
    CaughtUp { held_back: bool },
}

fn position(row: &sqlx::postgres::PgRow) -> Result<FeedPosition, sqlx::Error> {
    Ok(FeedPosition::new(
        to_u64(row.try_get(0)?),
        to_u64(row.try_get(1)?),
    ))
}

pub(super) fn version(version: u32) -> i32 {
    i32::try_from(version).unwrap_or(i32::MAX)
}

pub(super) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(super) fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}
