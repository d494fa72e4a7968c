//! One batch, in one transaction with the checkpoint (the checkpoint guard): the checkpoint is
//! locked and read again inside the transaction, events at or below it are skipped (they were
//! applied before), events of parked streams join their stream in the dead-letter queue, events
//! an inline application applied are skipped, side effects are claimed by event id, the others
//! are handled in order, the `#[flush]` runs and the checkpoint moves. Delivery is at least once,
//! the effect exactly once, even with two runners at once.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::runner::ProjectionRunner;
use super::status::{Failing, RunnerError};
use super::{HandlerError, Projection};
#[cfg(doc)]
use crate::envelope::EnvelopeFields;
use crate::envelope::RecordedEvent;
use crate::error::Error;
use crate::position::FeedPosition;
use crate::store::backend::{columns, to_i64};
use crate::store::{SqlStore, Tx};

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
/// behind it in a parked stream. Serialized as the `park` statement's JSON. An event read
/// without its id and stream version ([`EnvelopeFields::Source`]) leaves them out: the
/// statement takes them from the stored event at the letter's feed position.
#[derive(Serialize)]
pub(super) struct DeadLetter<'a> {
    stream_id: &'a str,
    stream_version: Option<i64>,
    event_id: Option<String>,
    event_type: &'a str,
    tx: i64,
    position: i64,
    error: Option<String>,
    attempts: u32,
}

impl<'a> DeadLetter<'a> {
    pub fn new(event: &'a RecordedEvent, error: Option<String>, attempts: u32) -> Self {
        // Read lean, an event holds stream version 0, which no stored event has (its id, nil,
        // is a placeholder then, but a stored id may be nil too): both come from the store.
        let whole = event.stream_version != 0;
        Self {
            stream_id: &event.stream_id,
            stream_version: whole.then(|| to_i64(event.stream_version)),
            event_id: whole.then(|| event.event_id.to_string()),
            event_type: &event.event_type,
            tx: to_i64(event.tx),
            position: to_i64(event.global_position),
            error,
            attempts,
        }
    }

    /// An event waiting behind its stream's failed one.
    pub fn behind(event: &'a RecordedEvent) -> Self {
        Self::new(event, None, 0)
    }
}

/// A list or record as the JSON text the statements take.
pub(super) fn json(value: &impl Serialize) -> Result<String, Error> {
    serde_json::to_string(value).map_err(|e| Error::Backend(Box::new(e)))
}

/// The distinct streams of `events`, as JSON.
fn streams(events: &[RecordedEvent]) -> Result<String, Error> {
    let mut streams: Vec<&str> = events.iter().map(|e| e.stream_id.as_str()).collect();
    streams.sort_unstable();
    streams.dedup();
    json(&streams)
}

/// A projection's checkpoint, locked for the transaction.
pub(super) struct Locked {
    /// Where it stood.
    pub checkpoint: FeedPosition,
    /// Those of the batch's streams that are parked.
    pub parked: Vec<String>,
    /// The lease's token in the checkpoint row.
    token: Option<String>,
    /// Whether it was moved to where it was asked to advance (when that was past it): then
    /// the transaction need not save it again.
    pub advanced: bool,
}

impl<S: SqlStore, P: Projection> ProjectionRunner<S, P> {
    /// Locks the projection's checkpoint for the transaction (so concurrent runners take
    /// turns, each skipping what the other did), creating it at the start when missing.
    /// Returns it with those of `events`' streams that are parked.
    pub(super) async fn lock_checkpoint(
        &self,
        tx: &mut Tx<'_>,
        events: &[RecordedEvent],
    ) -> Result<(FeedPosition, Vec<String>), Error> {
        let locked = self.lock_checkpoint_fenced(tx, events, None).await?;
        Ok((locked.checkpoint, locked.parked))
    }

    /// [`ProjectionRunner::lock_checkpoint`] for work that applies events: when this runner
    /// runs under the lease, the lease's token in the checkpoint row must still be its own
    /// (another runner that took the lease over wrote its own: this one then applies nothing
    /// more, [`RunnerError::LeaseLost`]). With `advance`, the checkpoint is also moved there
    /// when that is past it, where the store can in the same round trip
    /// ([`Locked::advanced`]).
    pub(super) async fn lock_checkpoint_held(
        &self,
        tx: &mut Tx<'_>,
        events: &[RecordedEvent],
        advance: Option<FeedPosition>,
    ) -> Result<Locked, RunnerError> {
        let locked = self.lock_checkpoint_fenced(tx, events, advance).await?;
        match &self.lease_token {
            Some(mine) if locked.token.as_deref() != Some(mine.as_str()) => {
                Err(RunnerError::LeaseLost {
                    projection: P::NAME,
                })
            }
            _ => Ok(locked),
        }
    }

    /// Writes this runner's lease token into the checkpoint row (creating it when missing),
    /// waiting for a batch another runner has in flight: from the commit on, that runner
    /// applies nothing more.
    pub(super) async fn claim_lease(&mut self) -> Result<(), Error> {
        let token = uuid::Uuid::now_v7().to_string();
        let mut transaction = self.store.begin().await?;
        let mut tx = transaction.tx();
        self.execute(&mut tx, self.statement(&self.sql.ensure_checkpoint))
            .await?;
        self.execute(&mut tx, self.statement(&self.sql.claim_lease).bind(&token))
            .await?;
        transaction.commit().await?;
        self.lease_token = Some(token);
        Ok(())
    }

    async fn lock_checkpoint_fenced(
        &self,
        tx: &mut Tx<'_>,
        events: &[RecordedEvent],
        advance: Option<FeedPosition>,
    ) -> Result<Locked, Error> {
        // The transaction's limits go with the lock (no round trip of their own).
        let millis = |d: std::time::Duration| d.as_millis().max(1).to_string();
        let advance = advance.and_then(|to| Some((self.sql.advance_checkpoint.as_ref()?, to)));
        let sql = advance.map_or(&self.sql.lock_checkpoint, |(sql, _)| sql);
        for _ in 0..2 {
            let mut statement = self
                .statement(sql)
                .bind(millis(self.options.statement_timeout))
                .bind(millis(self.options.idle_timeout));
            if let Some((_, to)) = advance {
                statement = statement.bind(to_i64(to.tx)).bind(to_i64(to.position));
            }
            let row = self.fetch_optional(&mut *tx, statement).await?;
            if let Some(row) = row {
                let checkpoint = FeedPosition::new(
                    columns::unsigned::<_, i64, _>(&row, 0)?,
                    columns::unsigned::<_, i64, _>(&row, 1)?,
                );
                let any_parked = columns::get::<_, i64>(&row, 2)? != 0;
                let token: Option<String> = columns::get(&row, 3)?;
                // Most of the time no stream is parked, and the batch's streams need not go.
                let parked = if any_parked && !events.is_empty() {
                    self.parked_among(tx, events).await?
                } else {
                    Vec::new()
                };
                return Ok(Locked {
                    checkpoint,
                    parked,
                    token,
                    advanced: advance.is_some(),
                });
            }
            self.execute(&mut *tx, self.statement(&self.sql.ensure_checkpoint))
                .await?;
        }
        Err(Error::Backend(
            format!(
                "the checkpoint of projection `{}` cannot be created",
                P::NAME
            )
            .into(),
        ))
    }

    /// Those of `events`' streams that are parked.
    async fn parked_among(
        &self,
        tx: &mut Tx<'_>,
        events: &[RecordedEvent],
    ) -> Result<Vec<String>, Error> {
        let row = self
            .fetch_optional(
                &mut *tx,
                self.statement(&self.sql.parked_among)
                    .bind(streams(events)?),
            )
            .await?;
        let parked: Option<String> = match row {
            Some(row) => columns::get(&row, 0)?,
            None => None,
        };
        super::sql::parked_streams::<P>(parked)
    }

    pub(super) async fn save_checkpoint(
        &self,
        tx: &mut Tx<'_>,
        checkpoint: FeedPosition,
    ) -> Result<(), Error> {
        self.execute(
            &mut *tx,
            self.statement(&self.sql.save_checkpoint)
                .bind(to_i64(checkpoint.tx))
                .bind(to_i64(checkpoint.position)),
        )
        .await?;
        Ok(())
    }

    /// Adds events to the dead-letter queue (in the caller's transaction).
    pub(super) async fn park(
        &self,
        tx: &mut Tx<'_>,
        letters: &[DeadLetter<'_>],
    ) -> Result<(), Error> {
        self.execute(
            &mut *tx,
            self.statement(&self.sql.park).bind(json(&letters)?),
        )
        .await?;
        Ok(())
    }

    /// For an inline projection, how far inline applications went in each of `events`'
    /// streams (those events are skipped); nothing otherwise.
    async fn inline_marks(
        &self,
        tx: &mut Tx<'_>,
        events: &[RecordedEvent],
    ) -> Result<HashMap<String, u64>, Error> {
        if !P::INLINE || events.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = self
            .fetch_all(
                &mut *tx,
                self.statement(&self.sql.inline_marks)
                    .bind(streams(events)?),
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    columns::get::<_, String>(row, 0)?,
                    columns::unsigned::<_, i64, u64>(row, 1)?,
                ))
            })
            .collect()
    }

    /// Claims the side effects of the batch's fresh events of `#[handle(side_effects)]` types
    /// (in the batch's transaction): returns the ids not claimed before. While replaying, the
    /// claims are recorded too (and nothing returned): an event's side effect is decided once,
    /// run live or skipped by a rebuild, never run by a later redelivery.
    async fn claim_side_effects(
        &self,
        tx: &mut Tx<'_>,
        events: &[RecordedEvent],
        checkpoint: FeedPosition,
        parked: &[String],
    ) -> Result<HashSet<String>, Error> {
        if P::SIDE_EFFECTS.is_empty() {
            return Ok(HashSet::new());
        }
        let ids: Vec<String> = events
            .iter()
            .filter(|e| {
                e.feed_position() > checkpoint
                    && P::SIDE_EFFECTS.contains(&e.event_type.as_str())
                    && !parked.contains(&e.stream_id)
            })
            .map(|e| e.event_id.to_string())
            .collect();
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        if self.replaying {
            self.execute(
                &mut *tx,
                self.statement(&self.sql.skip_side_effects)
                    .bind(json(&ids)?),
            )
            .await?;
            return Ok(HashSet::new());
        }
        self.decide_effects(tx, &ids).await
    }

    /// Decides to perform the side effects of the events `ids` (in the batch's transaction):
    /// returns those not decided before.
    pub(super) async fn decide_effects(
        &self,
        tx: &mut Tx<'_>,
        ids: &[String],
    ) -> Result<HashSet<String>, Error> {
        let rows = self
            .fetch_all(
                &mut *tx,
                self.statement(&self.sql.claim_side_effects)
                    .bind(json(&ids)?),
            )
            .await?;
        rows.iter().map(|row| columns::get(row, 0)).collect()
    }

    /// Performs side effects decided by committed batches, in order, outside any transaction:
    /// each until it succeeds (backing off, the runner's state `Retrying` meanwhile), then
    /// marks it done. An effect whose event no longer decodes can never run: it is marked
    /// failed, with its error, for a person to see. A crash before an effect is marked done
    /// performs it again at the next start, with the same idempotency key (the event id).
    ///
    /// # Errors
    /// A store error marking an effect (it stays pending, and is performed again).
    pub(super) async fn perform_effects(&mut self, events: &[RecordedEvent]) -> Result<(), Error> {
        for event in events {
            let mut failing = Failing::default();
            let failed_for_good = loop {
                let error = match self.projection.perform(event).await {
                    Ok(()) => break None,
                    Err(error @ HandlerError::Decode { .. }) => break Some(error.to_string()),
                    Err(error) => error.to_string(),
                };
                let (attempts, state) = failing.record(&error);
                tracing::warn!(
                    projection = P::NAME,
                    event_id = %event.event_id,
                    attempts,
                    %error,
                    "a side effect failed; retrying"
                );
                self.control.set(state);
                let mut connection = self.store.acquire().await?;
                self.execute(
                    &mut connection.tx(),
                    self.statement(&self.sql.effect_failed)
                        .bind(event.event_id.to_string())
                        .bind(error),
                )
                .await?;
                drop(connection);
                tokio::time::sleep(super::retry::backoff(
                    self.options.retries.backoff,
                    attempts,
                ))
                .await;
            };
            if let Some(error) = &failed_for_good {
                tracing::error!(
                    projection = P::NAME,
                    event_id = %event.event_id,
                    %error,
                    "a side effect can never be performed: its event does not decode"
                );
            }
            let mut connection = self.store.acquire().await?;
            self.execute(
                &mut connection.tx(),
                self.statement(&self.sql.effect_done)
                    .bind(event.event_id.to_string())
                    .bind(i32::from(failed_for_good.is_some()))
                    .bind(failed_for_good),
            )
            .await?;
        }
        Ok(())
    }

    /// Takes over the side effects a retired version decided and never performed (its runner
    /// stopped or crashed between a batch's commit and its effects), then performs them with
    /// this version's handlers (an event type this version has no side effect for is marked
    /// done). A version's effects are taken only while its lease is free: a retired runner
    /// still finishing its last batch performs its own, and none is performed twice. Returns
    /// how many were taken over.
    ///
    /// # Errors
    /// A store error.
    pub(super) async fn adopt_retired_effects(&mut self) -> Result<u64, Error> {
        if P::SIDE_EFFECTS.is_empty() {
            return Ok(0);
        }
        let versions: Vec<u32> = self
            .fetch_all_alone(self.statement(&self.sql.retired_effects))
            .await?
            .iter()
            .map(|row| columns::unsigned::<_, i64, _>(row, 0))
            .collect::<Result<_, Error>>()?;
        let mut adopted = 0;
        for version in versions {
            let name = crate::store::sql::LeaseName::Projection {
                name: P::NAME,
                version,
            };
            // Its runner is running: it performs them itself.
            let Some(lease) = self.store.try_lease(name).await? else {
                continue;
            };
            let mut connection = self.store.acquire().await?;
            let taken = self
                .execute(
                    &mut connection.tx(),
                    self.statement(&self.sql.adopt_effects)
                        .bind(i64::from(version)),
                )
                .await;
            drop(connection);
            lease.release().await;
            let taken = taken?.rows_affected();
            tracing::info!(
                projection = P::NAME,
                version = P::VERSION,
                retired = version,
                effects = taken,
                "taking over the side effects a retired version decided and never performed"
            );
            adopted += taken;
        }
        if adopted > 0 {
            self.perform_pending_effects().await?;
        }
        Ok(adopted)
    }

    /// Performs the side effects this version decided and did not perform (a runner of it
    /// stopped or crashed between a batch's commit and its effects), or took over from a
    /// retired version.
    ///
    /// # Errors
    /// A store error.
    pub(super) async fn perform_pending_effects(&mut self) -> Result<(), Error> {
        if P::SIDE_EFFECTS.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = self
            .fetch_all_alone(self.statement(&self.sql.pending_effects))
            .await?
            .iter()
            .map(|row| columns::get(row, 0))
            .collect::<Result<_, Error>>()?;
        if ids.is_empty() {
            return Ok(());
        }
        let events = self.store.events_by_id(&ids).await?;
        tracing::info!(
            projection = P::NAME,
            effects = events.len(),
            "performing side effects decided before the last stop"
        );
        self.perform_effects(&events).await
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
        let outcome = self.apply_from(None, events, next).await?;
        Ok(outcome.unwrap_or_default())
    }

    /// [`ProjectionRunner::apply_batch`] of a batch read after `after`: when the checkpoint is
    /// found below `after` (it was moved back meanwhile), applying the batch would leave a gap,
    /// so nothing is done and `None` returned.
    pub(super) async fn apply_from(
        &mut self,
        after: Option<FeedPosition>,
        events: &[RecordedEvent],
        next: FeedPosition,
    ) -> Result<Option<BatchOutcome>, RunnerError> {
        let mut transaction = self.store.begin().await?;
        let mut tx = transaction.tx();
        // The checkpoint moves as the transaction begins (where the store can in the same
        // round trip): whatever fails below rolls the move back with the batch.
        let Locked {
            checkpoint,
            parked,
            advanced,
            ..
        } = self
            .lock_checkpoint_held(&mut tx, events, Some(next))
            .await?;
        if after.is_some_and(|after| checkpoint < after) {
            return Ok(None); // dropped: rolled back
        }
        let mut outcome = BatchOutcome::default();
        let mut to_park = Vec::new();
        let inline = self.inline_marks(&mut tx, events).await?;
        let fresh = |e: &&RecordedEvent| {
            e.feed_position() > checkpoint
                && inline
                    .get(&e.stream_id)
                    .is_none_or(|&applied| e.stream_version > applied)
        };
        let claimed = self
            .claim_side_effects(&mut tx, events, checkpoint, &parked)
            .await?;
        self.projection.discard();
        let mut effects = Vec::new();
        for event in events.iter().filter(fresh) {
            if parked.contains(&event.stream_id) {
                to_park.push(DeadLetter::behind(event));
                continue;
            }
            if let Some(bad) = self
                .undecodable
                .iter()
                .find(|u| u.event_id == event.event_id)
            {
                // Its envelope does not read: a decoding failure, parked like any other.
                self.projection.discard();
                return Err(RunnerError::handler::<P>(HandlerError::decode(
                    event,
                    bad.cause(),
                )));
            }
            if P::SIDE_EFFECTS.contains(&event.event_type.as_str()) {
                // Decided now: performed after the commit. Replaying, or decided before: not.
                if !self.replaying && claimed.contains(&event.event_id.to_string()) {
                    effects.push(event.clone());
                    outcome.handled += 1;
                }
                continue;
            }
            let handled = match crate::trace::handling_span(P::KIND, P::NAME, event) {
                Some(span) => {
                    tracing::Instrument::instrument(self.projection.handle(event, &mut tx), span)
                        .await
                }
                None => self.projection.handle(event, &mut tx).await,
            };
            if let Err(cause) = handled {
                self.projection.discard();
                return Err(RunnerError::handler::<P>(cause));
            }
            outcome.handled += 1;
        }
        if let Err(cause) = self.projection.flush(&mut tx).await {
            self.projection.discard();
            return Err(RunnerError::handler::<P>(cause));
        }
        if !to_park.is_empty() {
            outcome.parked = to_park.len() as u64;
            self.park(&mut tx, &to_park).await?;
        }
        if !advanced {
            self.save_checkpoint(&mut tx, checkpoint.max(next)).await?;
        }
        transaction.commit().await?;
        self.projection.committed();
        self.perform_effects(&effects).await?;
        Ok(Some(outcome))
    }
}
