//! Running a projection: the lease (one runner per projection version at a time, across
//! processes), catch-up, then live following of the feed, woken by the store and by polling;
//! a building version switches over when it has caught up, an active one stops once a newer
//! one has; and where it stands (`status`).

use std::future::Future;
use std::time::Duration;

use chrono::Utc;

use super::batch::BatchOutcome;
use super::runner::ProjectionRunner;
use super::status::{Failing, ProjectionStatus, RunnerError, RunnerState, VersionState};
use super::{Projection, Reset};
use crate::envelope::EnvelopeFields;
use crate::error::Error;
use crate::position::FeedPosition;
use crate::store::backend::{columns, stored_time, to_i64};
use crate::store::sql::{Lease, LeaseName};
use crate::store::{FeedQuery, SqlStore};

impl<S: SqlStore, P: Projection> ProjectionRunner<S, P> {
    /// The next batch of the projection's events after `after`, of at most `limit` events.
    pub(super) fn feed_query(&self, after: FeedPosition, limit: usize) -> FeedQuery {
        FeedQuery::after(after)
            .limit(limit)
            .event_types(P::EVENT_TYPES.iter().copied())
            .fields(Self::read_fields())
    }

    /// The envelope fields the runner reads: those the handlers need
    /// ([`Projection::ENVELOPE`]), and the event ids and stream versions whenever the runner
    /// needs them itself: an inline projection's runner compares stream versions with the
    /// inline applications', side effects are claimed by event id.
    pub(super) fn read_fields() -> EnvelopeFields {
        if P::INLINE || !P::SIDE_EFFECTS.is_empty() {
            P::ENVELOPE.with_origin()
        } else {
            P::ENVELOPE
        }
    }

    /// Reads and applies one batch after the checkpoint, retrying a failing batch, then
    /// isolating (and parking) the failing event. While a full batch is applied, the next one
    /// is read on another connection, twice as large (up to `max_batch_size`): a runner that
    /// stays behind commits fewer, larger batches. A grown batch whose handler fails is read
    /// again at `batch_size`, where failures are retried and isolated.
    async fn step(&mut self) -> Result<Step, RunnerError> {
        let checkpoint = match self.position {
            Some(position) => position,
            None => self.checkpoint().await?,
        };
        let limit = self.limit;
        let batch = match self.read_ahead.take() {
            Some((after, batch)) if after == checkpoint => batch,
            _ => {
                self.store
                    .read_feed_parking(&self.feed_query(checkpoint, limit))
                    .await?
            }
        };
        self.undecodable.clone_from(&batch.undecodable);
        let full = batch.events.len() >= limit;
        self.limit = if full {
            self.grown(limit)
        } else {
            self.options.batch_size
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
        let ahead = full.then(|| {
            let query = self.feed_query(batch.next, self.limit);
            (self.store.clone(), query)
        });
        let read_ahead = async move {
            match ahead {
                Some((store, query)) => Some(store.read_feed_parking(&query).await),
                None => None,
            }
        };
        let grown = batch.events.len() > self.options.batch_size;
        let apply = async {
            if grown {
                self.apply_from(Some(checkpoint), &batch.events, batch.next)
                    .await
            } else {
                self.apply_checked(checkpoint, &batch).await
            }
        };
        let started = std::time::Instant::now();
        let (applied, ahead) = tracing::Instrument::instrument(
            async { tokio::join!(apply, read_ahead) },
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
            Err(RunnerError::Handler { cause, .. }) if grown => {
                // Nothing of it was applied. From now on batches grow to half its size at
                // most: a flush that cannot take that many events at once (a statement past
                // the database's bind limit) settles below it instead of failing again.
                // (`grown` never goes below the batch size.)
                let ceiling = batch.events.len() / 2;
                self.options.max_batch_size = self.options.max_batch_size.min(ceiling);
                tracing::warn!(
                    error = %cause,
                    events = batch.events.len(),
                    batch_size = self.options.batch_size,
                    max_batch_size = self.options.max_batch_size,
                    "a grown batch failed; reading it again at the batch size"
                );
                self.read_afresh();
                return Ok(Step::ReadAgain);
            }
            Err(error) => {
                self.read_afresh();
                return Err(error);
            }
        };
        crate::metrics::projection_batch(
            P::NAME,
            batch.events.len(),
            checkpoint.max(batch.next).position,
            started.elapsed(),
        );
        // Caught up (an empty batch only moved the checkpoint): read it again next time.
        self.position = (!batch.events.is_empty()).then(|| checkpoint.max(batch.next));
        if let Some(Ok(ahead)) = ahead {
            self.read_ahead = Some((batch.next, ahead));
        }
        // Read lean, the events hold no recording time.
        let time_lag = batch
            .events
            .last()
            .filter(|_| Self::read_fields() != EnvelopeFields::Source)
            .and_then(|last| (Utc::now() - last.recorded_at).to_std().ok())
            .map(|lag| u64::try_from(lag.as_millis()).unwrap_or(u64::MAX));
        tracing::debug!(
            handled = outcome.handled,
            parked = outcome.parked,
            next = %batch.next,
            time_lag_ms = time_lag,
            "projection batch applied"
        );
        let step = if batch.events.is_empty() {
            Step::CaughtUp {
                held_back: batch.held_back,
            }
        } else {
            Step::Applied(outcome)
        };
        // Its envelopes are filled again by a later read.
        self.store.keep_spare_batch(batch.events);
        Ok(step)
    }

    /// Processes everything already stored, without taking the lease (for tests and one-off
    /// rebuilds; use [`ProjectionRunner::run`] in services). Returns the number of events
    /// handled.
    ///
    /// # Errors
    /// As [`ProjectionRunner::apply_batch`].
    pub async fn catch_up(&mut self) -> Result<u64, RunnerError> {
        // Failures retried meanwhile report `Retrying`; once the catch-up is over, whatever
        // its outcome, it retries nothing, and the state it began in holds again.
        let began = self.control.state.borrow().clone();
        let result = self.catch_up_steps().await;
        if matches!(*self.control.state.borrow(), RunnerState::Retrying { .. }) {
            self.control.set(began);
        }
        result
    }

    /// [`ProjectionRunner::catch_up`]'s work: pending side effects, then batches until the
    /// feed's end.
    async fn catch_up_steps(&mut self) -> Result<u64, RunnerError> {
        self.perform_pending_effects().await?;
        let mut handled = 0;
        loop {
            match self.step().await? {
                Step::Applied(outcome) => handled += outcome.handled,
                Step::ReadAgain => {}
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
        self.read_afresh();
        self.catch_up().await
    }

    /// Waits for the lease: one runner per projection version at a time, across processes;
    /// another takes over when the holder stops or its process dies. `None`: shut down while
    /// waiting. Handles' requests are served meanwhile (those that apply events refused).
    pub(super) async fn acquire_lease(
        &mut self,
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
            if !matches!(*self.control.state.borrow(), RunnerState::Retrying { .. }) {
                self.control.set(RunnerState::Standby);
            }
            if self
                .wait(shutdown.as_mut(), self.options.lease_retry, None, false)
                .await
            {
                return Ok(None);
            }
        }
    }

    /// Waits for `delay`, a wake-up of the store (when given) or shutdown, serving handles'
    /// requests meanwhile. Returns whether shutdown came.
    async fn wait(
        &mut self,
        mut shutdown: std::pin::Pin<&mut (impl Future<Output = ()> + Send)>,
        delay: Duration,
        mut wakeups: Option<&mut crate::store::FeedWakeups>,
        leased: bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + delay;
        loop {
            self.serve_requests(leased).await;
            let woken = async {
                match wakeups.as_deref_mut() {
                    Some(wakeups) => wakeups.changed().await,
                    None => std::future::pending().await,
                }
            };
            let request = tokio::select! {
                () = shutdown.as_mut() => return true,
                () = woken => return false,
                () = tokio::time::sleep_until(deadline) => return false,
                request = self.control.requests.recv() => request,
            };
            if let Some(request) = request {
                request(self, leased).await;
            }
        }
    }

    /// Runs the projection until `shutdown` completes: waits for the lease, registers the
    /// version (building beside an older active one, or active), catches up, then follows new
    /// events, woken by the store and by polling; a building version switches over when it has
    /// caught up, and an active one stops once a newer one has. Shutdown lets the current batch
    /// finish. Returns the projection.
    ///
    /// A failure that may pass (the database unreachable, restarting or failing over, a
    /// transient handler failure past its budget with dead-lettering off) does not end the
    /// run: the runner releases the lease, waits (backing off, with jitter, up to 2 s) and
    /// resumes from its checkpoint, its state [`RunnerState::Retrying`] meanwhile (see
    /// [`ProjectionRunner::handle`]).
    ///
    /// # Errors
    /// A permanent failure: the store is not migrated or newer than this build, its data is
    /// corrupt, or a handler failed for good with dead-lettering off.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<P, RunnerError> {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut failing = Failing::default();
        let result = loop {
            let error = match self.session(shutdown.as_mut(), &mut failing).await {
                Ok(()) => break Ok(()),
                Err(error) if error.is_transient() => error,
                Err(error) => break Err(error),
            };
            self.read_afresh();
            let (attempts, state) = failing.record(&error);
            tracing::warn!(
                projection = P::NAME,
                version = P::VERSION,
                attempts,
                %error,
                "projection runner failed for a reason that may pass; retrying"
            );
            self.control.set(state);
            let delay = super::retry::backoff(self.options.retries.backoff, attempts);
            if self.wait(shutdown.as_mut(), delay, None, false).await {
                break Ok(());
            }
        };
        if let Err(error) = &result {
            tracing::error!(
                projection = P::NAME,
                version = P::VERSION,
                %error,
                "projection runner stopped"
            );
        }
        self.control.set(RunnerState::Stopped {
            error: result.as_ref().err().map(ToString::to_string),
        });
        result.map(|()| self.projection)
    }

    /// One tenure of the lease: takes it, registers the version, then catches up and follows
    /// until shutdown (`Ok`), retirement (`Ok`) or a failure; releases the lease. `failing`:
    /// the failures since the last success, cleared by the first successful step.
    async fn session(
        &mut self,
        mut shutdown: std::pin::Pin<&mut (impl Future<Output = ()> + Send)>,
        failing: &mut Failing,
    ) -> Result<(), RunnerError> {
        let Some(mut lease) = self.acquire_lease(shutdown.as_mut()).await? else {
            return Ok(());
        };
        tracing::info!(
            projection = P::NAME,
            version = P::VERSION,
            "projection lease taken"
        );
        // Holding the lease is running (a handle can ask for work from now on), unless
        // failures are still being retried: the first successful step says so.
        if !matches!(*self.control.state.borrow(), RunnerState::Retrying { .. }) {
            self.control.set(RunnerState::Running);
        }
        let result = async {
            self.claim_lease().await?;
            self.follow(shutdown, failing, &mut lease).await
        }
        .await;
        self.lease_token = None;
        lease.release().await;
        result
    }

    /// Catches up and follows the feed while holding the lease (checked when idle and every
    /// few seconds: a lease whose connection died is given up, and taken again).
    async fn follow(
        &mut self,
        mut shutdown: std::pin::Pin<&mut (impl Future<Output = ()> + Send)>,
        failing: &mut Failing,
        lease: &mut Lease,
    ) -> Result<(), RunnerError> {
        let mut state = self.register().await?;
        if state == VersionState::Retired {
            tracing::warn!(
                projection = P::NAME,
                version = P::VERSION,
                "a newer version of the projection is active: this one does not run"
            );
            return Ok(());
        }
        self.perform_pending_effects().await?;
        if state == VersionState::Active {
            self.adopt_retired_effects().await?;
        }
        let mut redriven = std::time::Instant::now();
        let mut checked = std::time::Instant::now();
        let mut measured = std::time::Instant::now();
        let mut adopted = std::time::Instant::now();
        let mut wakeups = self.store.wakeups();
        loop {
            wakeups.mark_seen();
            let wait = match self.step().await? {
                // Not a recovery: the batch is read again at once, smaller.
                Step::ReadAgain => continue,
                Step::Applied(_) => None,
                Step::CaughtUp { held_back: true } => Some(Duration::from_millis(5)),
                Step::CaughtUp { held_back: false } => {
                    if state == VersionState::Building {
                        if self.switch_over().await? {
                            state = VersionState::Active;
                            self.replaying = false;
                            adopted = std::time::Instant::now();
                            self.adopt_retired_effects().await?;
                        } else {
                            tracing::warn!("the version was retired while building");
                            return Ok(());
                        }
                    }
                    Some(self.options.poll_interval)
                }
            };
            if failing.recovered() {
                tracing::info!(
                    projection = P::NAME,
                    version = P::VERSION,
                    "projection runner recovered"
                );
            }
            self.control.set(RunnerState::Running);
            // Its lag and parked streams, as metrics (a status read, which counts the events
            // after the checkpoint: seldom while a backlog is worked off).
            let every = if wait.is_some() {
                MEASURE_IDLE
            } else {
                MEASURE_BUSY
            };
            if measured.elapsed() >= every {
                measured = std::time::Instant::now();
                if let Err(error) = self.status().await {
                    tracing::debug!(projection = P::NAME, %error, "status for metrics failed");
                }
                self.store.measure().await;
            }
            if let Some(every) = self.options.redrive
                && redriven.elapsed() >= every
            {
                redriven = std::time::Instant::now();
                self.retry_every_parked().await?;
            }
            if wait.is_some() || checked.elapsed() > RETIRE_CHECK {
                checked = std::time::Instant::now();
                lease.check().await.map_err(|error| {
                    tracing::warn!(projection = P::NAME, %error, "the lease's connection failed");
                    RunnerError::LeaseLost {
                        projection: P::NAME,
                    }
                })?;
                // An active version stops once a newer one has switched over.
                if state == VersionState::Active
                    && self.version_state().await? == Some(VersionState::Retired)
                {
                    tracing::info!(
                        projection = P::NAME,
                        version = P::VERSION,
                        "a newer version switched over: this one is retired and stops"
                    );
                    return Ok(());
                }
            }
            // Side effects a retired version left behind (its runner was still finishing its
            // last batch at the switch-over, and stopped or crashed before performing them).
            if state == VersionState::Active && wait.is_some() && adopted.elapsed() >= ADOPT_CHECK {
                adopted = std::time::Instant::now();
                self.adopt_retired_effects().await?;
            }
            let stop = match wait {
                None => {
                    self.serve_requests(true).await;
                    poll_now(shutdown.as_mut())
                }
                Some(wait) => {
                    self.wait(shutdown.as_mut(), wait, Some(&mut wakeups), true)
                        .await
                }
            };
            if stop {
                return Ok(());
            }
        }
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
                    .bind(types)
                    .bind(self.store.event_scope().map(str::to_owned)),
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
        let status = ProjectionStatus {
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
            runner: self.control.state.borrow().clone(),
        };
        crate::metrics::projection_status(
            P::NAME,
            (status.checkpoint.position, status.head.position),
            (status.event_lag, status.time_lag),
            status.parked_streams,
        );
        Ok(status)
    }
}

/// How often a running runner reads its status to publish its lag as metrics: when caught up,
/// and while it works off a backlog (the read counts the backlog's events).
const MEASURE_IDLE: Duration = Duration::from_secs(5);
const MEASURE_BUSY: Duration = Duration::from_secs(30);

/// How often a busy runner checks its lease, and (an active version) whether a newer one has
/// switched over.
const RETIRE_CHECK: Duration = Duration::from_secs(1);

/// How often an idle active version looks for side effects a retired version decided and
/// never performed.
const ADOPT_CHECK: Duration = Duration::from_secs(5);

/// Whether the shutdown future has completed, without waiting.
fn poll_now(shutdown: std::pin::Pin<&mut (impl Future<Output = ()> + Send)>) -> bool {
    let waker = std::task::Waker::noop();
    let mut context = std::task::Context::from_waker(waker);
    shutdown.poll(&mut context).is_ready()
}

enum Step {
    Applied(BatchOutcome),
    /// A grown batch failed and was rolled back: it is read again at the batch size.
    ReadAgain,
    CaughtUp {
        held_back: bool,
    },
}
