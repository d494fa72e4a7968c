//! Failing batches and the sequence dead-letter queue (as in Axon): a batch that fails is
//! retried with backoff; one that keeps failing is applied event by event, so the failing event
//! is found, and that event's stream is parked: the event, and every later event of the stream
//! the projection handles, wait in the queue in order while other streams flow on. An operator
//! lists parked streams, retries one (its events are handled in order, each removed once
//! applied, stopping again at the first failure) or skips its first event (kept, marked
//! skipped, for the audit trail). A database outage parks nothing: the runner waits it out.

use super::batch::{BatchOutcome, DeadLetter};
use super::retry::Failure;
use super::runner::ProjectionRunner;
use super::status::{Failing, ParkedStream, RetryOutcome, RunnerError};
use super::{HandlerError, Projection};
use crate::envelope::{EnvelopeFields, RecordedEvent};
use crate::error::Error;
use crate::position::FeedPosition;
use crate::store::backend::{columns, stored_time, to_i64};
use crate::store::{FeedBatch, SqlStore, Tx};

/// Whether a batch's transient failures are retried within the transient budget (a batch
/// as read) or only quickly (its events one by one, once the budget ran out for the batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Budget {
    Full,
    Spent,
}

/// A batch that kept failing, and how often it was tried.
struct Failed {
    error: RunnerError,
    attempts: u32,
}

impl<S: SqlStore, P: Projection> ProjectionRunner<S, P> {
    /// Applies a batch, retrying it while the failure may pass: a few quick retries for an
    /// error of no known class, retries within the transient budget for a transient one, a few
    /// quick ones for an outage (which the run loop then waits out).
    async fn apply_with_retries(
        &mut self,
        after: Option<FeedPosition>,
        events: &[RecordedEvent],
        next: FeedPosition,
        budget: Budget,
    ) -> Result<Option<BatchOutcome>, Failed> {
        let retries = self.options.retries;
        let started = std::time::Instant::now();
        let mut attempt = 0;
        let mut failing = Failing::default();
        loop {
            let error = match self.apply_from(after, events, next).await {
                Ok(outcome) => return Ok(outcome),
                Err(error) => error,
            };
            let again = match &error {
                RunnerError::Handler { cause, .. } => match Failure::of(cause) {
                    Failure::Transient if budget == Budget::Full => {
                        started.elapsed() < retries.transient_budget
                    }
                    Failure::Event { retry: false } => false,
                    _ => attempt < retries.max,
                },
                _ => false,
            };
            attempt += 1;
            if !again {
                return Err(Failed {
                    error,
                    attempts: attempt,
                });
            }
            tracing::warn!(attempt, %error, "projection batch failed; retrying");
            let (_, state) = failing.record(&error);
            self.control.set(state);
            tokio::time::sleep(retries.delay(attempt)).await;
        }
    }

    /// Applies a batch read after `after`, isolating (and parking) the failing event when it
    /// keeps failing. `None`: the checkpoint was moved back meanwhile, nothing was done.
    pub(super) async fn apply_checked(
        &mut self,
        after: FeedPosition,
        batch: &FeedBatch,
    ) -> Result<Option<BatchOutcome>, RunnerError> {
        let mut completed = None;
        if Self::read_fields() == EnvelopeFields::Source {
            // Read lean: the events carry no ids or stream versions, which a failure's error, its
            // retries and its dead letter name. The first attempt needs none of them; after a
            // handler's failure the batch is read again whole, and goes on as any other.
            match self
                .apply_from(Some(after), &batch.events, batch.next)
                .await
            {
                Err(RunnerError::Handler { cause, .. }) => {
                    tracing::debug!(error = %cause, "lean batch failed; reading its origins");
                    completed = Some(self.complete(after, batch).await?);
                }
                done => return done,
            }
        }
        let events = completed.as_deref().unwrap_or(&batch.events);
        match self
            .apply_with_retries(Some(after), events, batch.next, Budget::Full)
            .await
        {
            Err(Failed {
                error: RunnerError::Handler { cause, .. },
                ..
            }) if self.parks(&cause) => {
                tracing::warn!(error = %cause, "projection batch kept failing; isolating the failing event");
                self.isolate(events, batch.next).await.map(Some)
            }
            Err(failed) => Err(failed.error),
            Ok(outcome) => Ok(outcome),
        }
    }

    /// `batch`, read after `after` with [`EnvelopeFields::Source`], read again with every
    /// field of an [`Origin`](crate::Origin): the same events, whole.
    ///
    /// # Errors
    /// A store error; [`Error::Corrupt`] when the events read are not the batch's.
    async fn complete(
        &self,
        after: FeedPosition,
        batch: &FeedBatch,
    ) -> Result<Vec<RecordedEvent>, RunnerError> {
        let query = self
            .feed_query(after, batch.events.len())
            .fields(EnvelopeFields::Origin);
        let whole = self.store.read_feed_parking(&query).await?.events;
        let same = whole.len() == batch.events.len()
            && whole
                .iter()
                .zip(&batch.events)
                .all(|(whole, lean)| whole.feed_position() == lean.feed_position());
        if !same {
            return Err(Error::Corrupt {
                reason: format!(
                    "the feed after {after} read again for projection `{}` does not hold the events of its batch",
                    P::NAME
                ),
            }
            .into());
        }
        Ok(whole)
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
            let one = std::slice::from_ref(event);
            match self
                .apply_with_retries(None, one, event.feed_position(), Budget::Spent)
                .await
            {
                Ok(one) => outcome += one.unwrap_or_default(),
                Err(Failed {
                    error: RunnerError::Handler { cause, .. },
                    attempts,
                }) if self.parks(&cause) => {
                    outcome += self.park_failed(event, &cause, attempts).await?;
                }
                Err(failed) => return Err(failed.error),
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
        attempts: u32,
    ) -> Result<BatchOutcome, RunnerError> {
        let mut transaction = self.store.begin().await?;
        let mut tx = transaction.tx();
        let checkpoint = self
            .lock_checkpoint_held(&mut tx, std::slice::from_ref(event), None)
            .await?
            .checkpoint;
        if event.feed_position() <= checkpoint {
            return Ok(BatchOutcome::default()); // another runner got past it meanwhile
        }
        let letter = DeadLetter::new(event, Some(cause.to_string()), attempts);
        self.park(&mut tx, &[letter]).await?;
        self.save_checkpoint(&mut tx, event.feed_position()).await?;
        transaction.commit().await?;
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

    /// The streams parked in this projection's dead-letter queue, oldest first.
    ///
    /// # Errors
    /// A store error.
    pub async fn parked(&self) -> Result<Vec<ParkedStream>, Error> {
        let mut connection = self.store.acquire().await?;
        let rows = self
            .fetch_all(&mut connection.tx(), self.statement(&self.sql.list_parked))
            .await?;
        rows.iter()
            .map(|row| {
                let parked_at: String = columns::get(row, 5)?;
                Ok(ParkedStream {
                    stream_id: columns::get(row, 0)?,
                    first_version: columns::unsigned::<_, i64, _>(row, 1)?,
                    events: columns::unsigned::<_, i64, _>(row, 2)?,
                    error: columns::get(row, 3)?,
                    attempts: columns::unsigned::<_, i64, _>(row, 4)?,
                    parked_at: stored_time(&parked_at, "a parking time")?,
                })
            })
            .collect()
    }

    /// The version of a stream's first parked event. In a write transaction, the checkpoint is
    /// locked first, so a runner does not apply a batch meanwhile.
    async fn first_parked(&self, tx: &mut Tx<'_>, stream_id: &str) -> Result<Option<u64>, Error> {
        let row = self
            .fetch_optional(
                &mut *tx,
                self.statement(&self.sql.first_parked).bind(stream_id),
            )
            .await?;
        match row {
            Some(row) => columns::unsigned_opt::<_, i64, _>(&row, 0),
            None => Ok(None),
        }
    }

    /// Retries a parked stream: handles its parked events in order, each in its own
    /// transaction (with the `#[flush]`) that also removes it from the queue, until the queue
    /// holds none of the stream (it flows again) or one fails again (it and the later ones stay
    /// parked, with the new error).
    ///
    /// # Errors
    /// A store error.
    pub async fn retry_parked(&mut self, stream_id: &str) -> Result<RetryOutcome, Error> {
        let span = tracing::info_span!(
            "factum.projection.retry",
            projection = P::NAME,
            version = P::VERSION,
            stream = stream_id
        );
        tracing::Instrument::instrument(self.retry_stream(stream_id), span).await
    }

    /// Retries every parked stream once (the scheduled re-drive of a running runner).
    ///
    /// # Errors
    /// A store error.
    pub(super) async fn retry_every_parked(&mut self) -> Result<(), Error> {
        for parked in self.parked().await? {
            match self.retry_parked(&parked.stream_id).await? {
                RetryOutcome::Drained { handled } => tracing::info!(
                    projection = P::NAME,
                    stream = parked.stream_id,
                    handled,
                    "a parked stream drained by the scheduled re-drive"
                ),
                RetryOutcome::Stopped { stream_version, .. } => tracing::debug!(
                    projection = P::NAME,
                    stream = parked.stream_id,
                    stream_version,
                    "a parked stream still fails; it stays parked"
                ),
            }
        }
        Ok(())
    }

    async fn retry_stream(&mut self, stream_id: &str) -> Result<RetryOutcome, Error> {
        let mut events: Vec<RecordedEvent> = Vec::new();
        let mut handled = 0;
        loop {
            // The stream's events are read before the write transaction (SQLite's pool may
            // have only the one connection the transaction holds).
            let next = {
                let mut connection = self.store.acquire().await?;
                self.first_parked(&mut connection.tx(), stream_id).await?
            };
            let Some(next) = next else {
                tracing::info!(handled, "parked stream drained");
                return Ok(RetryOutcome::Drained { handled });
            };
            if !events.iter().any(|e| e.stream_version == next) {
                events = self.store.read_stream(stream_id, next..).await?;
            }
            let mut transaction = self.store.begin().await?;
            let mut tx = transaction.tx();
            self.lock_checkpoint(&mut tx, &[]).await?;
            let Some(stream_version) = self.first_parked(&mut tx, stream_id).await? else {
                continue; // drained meanwhile: the next round says so
            };
            let Some(event) = events.iter().find(|e| e.stream_version == stream_version) else {
                if stream_version != next {
                    continue; // changed meanwhile: read again
                }
                return Err(Error::Corrupt {
                    reason: format!(
                        "the dead-letter queue of `{}` names {stream_id}@{stream_version}, which the store does not hold",
                        P::NAME
                    ),
                });
            };
            self.projection.discard();
            // A side effect is decided in the transaction and performed after the commit.
            let (mut result, perform) = if P::SIDE_EFFECTS.contains(&event.event_type.as_str()) {
                let id = event.event_id.to_string();
                let decided = self
                    .decide_effects(&mut tx, std::slice::from_ref(&id))
                    .await?;
                (Ok(()), decided.contains(&id))
            } else {
                (self.projection.handle(event, &mut tx).await, false)
            };
            if result.is_ok() {
                result = self.projection.flush(&mut tx).await;
            }
            if let Err(error) = result {
                self.projection.discard();
                drop(transaction);
                let mut connection = self.store.acquire().await?;
                self.execute(
                    &mut connection.tx(),
                    self.statement(&self.sql.record_failure)
                        .bind(stream_id)
                        .bind(to_i64(stream_version))
                        .bind(error.to_string()),
                )
                .await?;
                tracing::warn!(stream_version, %error, "parked event failed again");
                return Ok(RetryOutcome::Stopped {
                    handled,
                    stream_version,
                    error,
                });
            }
            self.execute(
                &mut tx,
                self.statement(&self.sql.unpark)
                    .bind(stream_id)
                    .bind(to_i64(stream_version)),
            )
            .await?;
            transaction.commit().await?;
            self.projection.committed();
            if perform {
                self.perform_effects(std::slice::from_ref(event)).await?;
            }
            handled += 1;
        }
    }

    /// Skips the first parked event of a stream: it stays in the queue, marked skipped (for
    /// the audit trail), and is never applied. The stream's later events stay parked until
    /// [`ProjectionRunner::retry_parked`]. Returns the skipped event's version (`None`: the
    /// stream is not parked).
    ///
    /// # Errors
    /// A store error.
    pub async fn skip_parked(&mut self, stream_id: &str) -> Result<Option<u64>, Error> {
        let mut transaction = self.store.begin().await?;
        let mut tx = transaction.tx();
        self.lock_checkpoint(&mut tx, &[]).await?;
        let Some(stream_version) = self.first_parked(&mut tx, stream_id).await? else {
            return Ok(None);
        };
        self.execute(
            &mut tx,
            self.statement(&self.sql.skip)
                .bind(stream_id)
                .bind(to_i64(stream_version)),
        )
        .await?;
        transaction.commit().await?;
        tracing::warn!(
            projection = P::NAME,
            version = P::VERSION,
            stream = stream_id,
            stream_version,
            "parked event skipped: it will never be applied"
        );
        Ok(Some(stream_version))
    }
}
