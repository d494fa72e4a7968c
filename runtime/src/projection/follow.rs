//! Running a projection: the lease (one runner per projection version at a time, across
//! processes), catch-up, then live following of the feed, woken by the store and by polling;
//! a building version switches over when it has caught up, an active one stops once a newer
//! one has; and where it stands (`status`).

use std::future::Future;
use std::time::Duration;

use chrono::Utc;

use super::batch::BatchOutcome;
use super::runner::ProjectionRunner;
use super::status::{ProjectionStatus, RunnerError, VersionState};
use super::{Projection, Reset};
use crate::error::Error;
use crate::position::FeedPosition;
use crate::store::backend::{columns, stored_time, to_i64};
use crate::store::sql::{Lease, LeaseName};
use crate::store::{FeedQuery, SqlStore};

impl<S: SqlStore, P: Projection> ProjectionRunner<S, P> {
    /// The next batch of the projection's events after `after`.
    fn feed_query(&self, after: FeedPosition) -> FeedQuery {
        FeedQuery::after(after)
            .limit(self.options.batch_size)
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
        let ahead = (batch.events.len() >= self.options.batch_size)
            .then(|| (self.store.clone(), self.feed_query(batch.next)));
        let read_ahead = async move {
            match ahead {
                Some((store, query)) => Some(store.read_feed(&query).await),
                None => None,
            }
        };
        let (applied, ahead) = tracing::Instrument::instrument(
            async { tokio::join!(self.apply_checked(checkpoint, &batch), read_ahead) },
            span.clone(),
        )
        .await;
        let _entered = span.enter();
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
    /// rebuilds; use [`ProjectionRunner::run`] in services). Returns the number of events
    /// handled.
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

    /// Rebuilds this version from the start: clears the read model (the projection's
    /// `#[reset]`) and the version's progress (checkpoint, dead letters, inline marks) in one
    /// transaction, then catches up. Returns the events handled. Stop the version's running
    /// runner first: it would go on from its own position.
    ///
    /// # Errors
    /// The reset's failure, a store error, or as [`ProjectionRunner::catch_up`].
    pub async fn rebuild(&mut self) -> Result<u64, RunnerError>
    where
        P: Reset,
    {
        let mut transaction = self.store.begin().await?;
        let mut tx = transaction.tx();
        self.projection
            .reset(&mut tx)
            .await
            .map_err(RunnerError::handler::<P>)?;
        for clear in &self.sql.clear {
            self.statement(clear)
                .execute(&mut tx)
                .await
                .map_err(|e| self.fail(e))?;
        }
        transaction.commit().await?;
        self.position = None;
        self.read_ahead = None;
        self.catch_up().await
    }

    /// Waits for the lease: one runner per projection version at a time, across processes;
    /// another takes over when the holder stops or its process dies. `None`: shut down while
    /// waiting.
    pub(super) async fn acquire_lease(
        &self,
        mut shutdown: std::pin::Pin<&mut (impl Future<Output = ()> + Send)>,
    ) -> Result<Option<Lease>, RunnerError> {
        let name = LeaseName::Projection {
            name: P::NAME,
            version: P::VERSION,
        };
        loop {
            if let Some(lease) = self.store.try_lease(name).await? {
                return Ok(Some(lease));
            }
            tokio::select! {
                () = shutdown.as_mut() => return Ok(None),
                () = tokio::time::sleep(self.options.lease_retry) => {}
            }
        }
    }

    /// Runs the projection until `shutdown` completes: waits for the lease, registers the
    /// version (building beside an older active one, or active), catches up, then follows new
    /// events, woken by the store and by polling; a building version switches over when it has
    /// caught up, and an active one stops once a newer one has. Shutdown lets the current batch
    /// finish. Returns the projection.
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
            lease.release().await;
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
                    Some(self.options.poll_interval)
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
                None => poll_now(shutdown.as_mut()),
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
        lease.release().await;
        result.map(|()| self.projection)
    }

    /// The projection's checkpoint, the store's head, and the lag between them.
    ///
    /// # Errors
    /// A store error.
    pub async fn status(&self) -> Result<ProjectionStatus, Error> {
        let checkpoint = self.checkpoint().await?;
        let types = super::batch::json(&P::EVENT_TYPES)?;
        let mut connection = self.store.acquire().await?;
        let row = self
            .fetch_one(
                &mut connection.tx(),
                self.statement(&self.sql.status)
                    .bind(to_i64(checkpoint.tx))
                    .bind(to_i64(checkpoint.position))
                    .bind(types),
            )
            .await?;
        drop(connection);
        let head = FeedPosition::new(
            columns::unsigned::<_, i64, _>(&row, 0)?,
            columns::unsigned::<_, i64, _>(&row, 1)?,
        );
        let oldest: Option<String> = columns::get(&row, 3)?;
        let oldest = oldest
            .map(|text| stored_time(&text, "an event's recording time"))
            .transpose()?;
        Ok(ProjectionStatus {
            name: P::NAME,
            version: P::VERSION,
            checkpoint,
            head,
            event_lag: columns::unsigned::<_, i64, _>(&row, 2)?,
            time_lag: oldest
                .and_then(|oldest| (Utc::now() - oldest).to_std().ok())
                .unwrap_or_default(),
            parked_streams: columns::unsigned::<_, i64, _>(&row, 4)?,
            parked_events: columns::unsigned::<_, i64, _>(&row, 5)?,
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
fn poll_now(shutdown: std::pin::Pin<&mut (impl Future<Output = ()> + Send)>) -> bool {
    let waker = std::task::Waker::noop();
    let mut context = std::task::Context::from_waker(waker);
    shutdown.poll(&mut context).is_ready()
}

enum Step {
    Applied(BatchOutcome),
    CaughtUp { held_back: bool },
}
