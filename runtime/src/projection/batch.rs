//! One batch, in one transaction with the checkpoint (the checkpoint guard): the checkpoint is
//! locked and read again inside the transaction, events at or below it are skipped (they were
//! applied before), events of parked streams join their stream in the dead-letter queue, events
//! an inline application applied are skipped, side effects are claimed by event id, the others
//! are handled in order, the `#[flush]` runs and the checkpoint moves. Delivery is at least once,
//! the effect exactly once, even with two runners at once.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::runner::ProjectionRunner;
use super::status::RunnerError;
use super::{HandlerError, Projection};
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
/// behind it in a parked stream. Serialized as the `park` statement's JSON.
#[derive(Serialize)]
pub(super) struct DeadLetter<'a> {
    stream_id: &'a str,
    stream_version: i64,
    event_id: String,
    event_type: &'a str,
    tx: i64,
    position: i64,
    error: Option<String>,
    attempts: u32,
}

impl<'a> DeadLetter<'a> {
    pub fn new(event: &'a RecordedEvent, error: Option<String>, attempts: u32) -> Self {
        Self {
            stream_id: &event.stream_id,
            stream_version: to_i64(event.stream_version),
            event_id: event.event_id.to_string(),
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

impl<S: SqlStore, P: Projection> ProjectionRunner<S, P> {
    /// Locks the projection's checkpoint for the transaction (so concurrent runners take
    /// turns, each skipping what the other did), creating it at the start when missing.
    /// Returns it with those of `events`' streams that are parked.
    pub(super) async fn lock_checkpoint(
        &self,
        tx: &mut Tx<'_>,
        events: &[RecordedEvent],
    ) -> Result<(FeedPosition, Vec<String>), Error> {
        let (checkpoint, parked, _) = self.lock_checkpoint_fenced(tx, events).await?;
        Ok((checkpoint, parked))
    }

    /// [`ProjectionRunner::lock_checkpoint`] for work that applies events: when this runner
    /// runs under the lease, the lease's token in the checkpoint row must still be its own
    /// (another runner that took the lease over wrote its own: this one then applies nothing
    /// more, [`RunnerError::LeaseLost`]).
    pub(super) async fn lock_checkpoint_held(
        &self,
        tx: &mut Tx<'_>,
        events: &[RecordedEvent],
    ) -> Result<(FeedPosition, Vec<String>), RunnerError> {
        let (checkpoint, parked, token) = self.lock_checkpoint_fenced(tx, events).await?;
        match &self.lease_token {
            Some(mine) if token.as_deref() != Some(mine.as_str()) => Err(RunnerError::LeaseLost {
                projection: P::NAME,
            }),
            _ => Ok((checkpoint, parked)),
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
    ) -> Result<(FeedPosition, Vec<String>, Option<String>), Error> {
        let streams = streams(events)?;
        for _ in 0..2 {
            let row = self
                .fetch_optional(
                    &mut *tx,
                    self.statement(&self.sql.lock_checkpoint).bind(&streams),
                )
                .await?;
            if let Some(row) = row {
                let checkpoint = FeedPosition::new(
                    columns::unsigned::<_, i64, _>(&row, 0)?,
                    columns::unsigned::<_, i64, _>(&row, 1)?,
                );
                let parked: String = columns::get(&row, 2)?;
                let parked = serde_json::from_str(&parked).map_err(|e| Error::Corrupt {
                    reason: format!("the parked streams of `{}` do not read: {e}", P::NAME),
                })?;
                let token: Option<String> = columns::get(&row, 3)?;
                return Ok((checkpoint, parked, token));
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
        let rows = self
            .fetch_all(
                &mut *tx,
                self.statement(&self.sql.claim_side_effects)
                    .bind(json(&ids)?),
            )
            .await?;
        rows.iter().map(|row| columns::get(row, 0)).collect()
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
        let (checkpoint, parked) = self.lock_checkpoint_held(&mut tx, events).await?;
        if after.is_some_and(|after| checkpoint < after) {
            return Ok(None);
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
        for event in events.iter().filter(fresh) {
            if parked.contains(&event.stream_id) {
                to_park.push(DeadLetter::behind(event));
                continue;
            }
            if P::SIDE_EFFECTS.contains(&event.event_type.as_str())
                && (self.replaying || !claimed.contains(&event.event_id.to_string()))
            {
                continue; // replaying, or its side effect already ran
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
            if let Err(cause) = self.projection.handle(event, &mut tx).await {
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
        self.save_checkpoint(&mut tx, checkpoint.max(next)).await?;
        transaction.commit().await?;
        self.projection.committed();
        Ok(Some(outcome))
    }
}
