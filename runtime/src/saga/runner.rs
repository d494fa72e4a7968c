//! The saga runner, written once for both SQL stores.
//!
//! - Events reach the saga through a projection runner (the same lease, checkpoint, retries,
//!   dead-letter queue and lag as projections): each batch's instance states, outbox commands
//!   and timeouts commit with the checkpoint.
//! - The dispatcher delivers the outbox in order through the [`CommandBus`], one dispatcher per
//!   saga at a time across processes (a lease). A command id is derived from its cause, and the
//!   aggregate executes it at most once, so a crash between delivery and acknowledgement
//!   applies nothing twice. A refused command goes back to the saga's `#[rejected]` handler.
//! - Timeouts fire when the runner's [`Clock`] passes them, after a restart too; the instance is
//!   locked first, as for events, so the two take turns.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use super::Saga;
use super::bus::CommandBus;
use super::core::{Core, SagaError, SagaEvents, SagaInstance, SagaStatus, Settled};
use super::tables::Tables;
use crate::clock::{Clock, SystemClock};
use crate::error::Error;
use crate::projection::{
    ParkedStream, ProjectionRunner, RetryOutcome, RunnerError, RunnerHandle, RunnerState,
};
use crate::store::SqlStore;

/// Runs saga `S` on a SQL store `St`: its events, its outbox and its timeouts.
///
/// ```no_run
/// # async fn run<S: factum::saga::Saga>(store: factum::store::SqliteStore, bus: factum::saga::CommandBus) -> Result<(), factum::saga::SagaError> {
/// use factum::saga::SagaRunner;
///
/// let runner = SagaRunner::<_, S>::new(store, bus);
/// runner.run(std::future::pending()).await?;
/// # Ok(()) }
/// ```
pub struct SagaRunner<St: SqlStore, S: Saga> {
    events: ProjectionRunner<St, SagaEvents<S, St>>,
    core: Arc<Core<S, St>>,
    poll_interval: Duration,
}

/// A saga runner on PostgreSQL.
#[cfg(feature = "postgres")]
pub type PgSagaRunner<S> = SagaRunner<crate::store::PostgresStore, S>;

/// A saga runner on SQLite.
#[cfg(feature = "sqlite")]
pub type SqliteSagaRunner<S> = SagaRunner<crate::store::SqliteStore, S>;

impl<St: SqlStore, S: Saga> std::fmt::Debug for SagaRunner<St, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SagaRunner")
            .field("saga", &S::NAME)
            .field("events", &self.events)
            .field("bus", &self.core.bus)
            .finish_non_exhaustive()
    }
}

impl<St: SqlStore, S: Saga> SagaRunner<St, S> {
    /// A runner of saga `S` on `store` (migrated), delivering commands through `bus`, on the
    /// system clock.
    #[must_use]
    pub fn new(store: St, bus: CommandBus) -> Self {
        Self::build(
            store,
            bus,
            Arc::new(SystemClock),
            Duration::from_millis(200),
        )
    }

    fn build(store: St, bus: CommandBus, clock: Arc<dyn Clock>, poll_interval: Duration) -> Self {
        let core = Arc::new(Core {
            tables: Tables::new(store.clone()),
            bus,
            clock,
            dispatch_batch: 100,
            wake: Arc::default(),
            work_state: tokio::sync::watch::Sender::new(RunnerState::NotStarted),
            saga: PhantomData,
        });
        let events = ProjectionRunner::new(
            store,
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

    /// Uses `clock` for scheduling and firing timeouts (a
    /// [`ManualClock`](crate::saga::ManualClock) in tests).
    #[must_use]
    pub fn clock(mut self, clock: impl Clock) -> Self {
        // A new core with the clock; the event side keeps the options set so far.
        let core = Arc::new(Core {
            tables: self.core.tables.clone(),
            bus: self.core.bus.clone(),
            clock: Arc::new(clock),
            dispatch_batch: self.core.dispatch_batch,
            wake: Arc::default(),
            work_state: tokio::sync::watch::Sender::new(RunnerState::NotStarted),
            saga: PhantomData,
        });
        self.events = self.events.with_projection(SagaEvents {
            core: Arc::clone(&core),
        });
        self.core = core;
        self
    }

    /// Events per transaction when the runner starts or follows the feed live (default 500);
    /// while it stays behind, its batches double up to [`max_batch_size`](Self::max_batch_size),
    /// as a projection runner's do ([`ProjectionRunner::batch_size`]).
    ///
    /// [`ProjectionRunner::batch_size`]: crate::projection::ProjectionRunner::batch_size
    #[must_use]
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.events = self.events.batch_size(batch_size);
        self
    }

    /// The most events per transaction while the runner stays behind (default 5,000; never
    /// below [`batch_size`](Self::batch_size)). A grown batch that fails is read again at
    /// `batch_size`.
    #[must_use]
    pub fn max_batch_size(mut self, max_batch_size: usize) -> Self {
        self.events = self.events.max_batch_size(max_batch_size);
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
        let (events, core) = (&mut self.events, &self.core);
        core.settle(async || Ok(events.catch_up().await?)).await
    }

    /// The streams whose events the saga could not handle, parked in the dead-letter queue (as
    /// for projections) while other streams flow on.
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
        self.core.instance(saga_id).await
    }

    /// Where the saga stands: its event lag and parked streams, instances, outbox, timeouts.
    ///
    /// # Errors
    /// A store error.
    pub async fn status(&self) -> Result<SagaStatus, Error> {
        let events = self.events.status().await?;
        self.core.status(events).await
    }

    /// A handle on this runner, to ask it how it is doing and to retry or skip its parked
    /// streams while it runs (take it after the builder methods: `.clock()` makes a new
    /// runner).
    #[must_use]
    pub fn handle(&self) -> SagaHandle<St, S> {
        SagaHandle {
            events: self.events.handle(),
            work: self.core.work_state.subscribe(),
            core: Arc::clone(&self.core),
        }
    }

    /// Runs the saga until `shutdown` completes: its events (under the projection lease), the
    /// delivery of its commands (woken when an instance sends some, in this process or, where
    /// the store signals across processes, another) and its timeouts (checked every poll
    /// interval). Failures that may pass (the database unavailable, a command that cannot be
    /// delivered now) are retried with backoff, by each side on its own; the saga runs or stops
    /// as a whole.
    ///
    /// # Errors
    /// When the event side stops on a permanent failure ([`RunnerError`]): the command and
    /// timeout side stops with it.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), SagaError> {
        let Self {
            events,
            core,
            poll_interval,
        } = self;
        let listening = core.tables.sql.channel.clone().and_then(|channel| {
            core.tables
                .store
                .listen(channel, Arc::clone(&core.wake))
                .map(tokio::spawn)
        });
        let result = super::core::run(
            core,
            move |stop| Box::pin(async move { events.run(stop).await.map(drop) }),
            poll_interval,
            shutdown,
        )
        .await;
        if let Some(listening) = listening {
            listening.abort();
        }
        result
    }
}

/// A handle on a [`SagaRunner`], taken before `run` and usable while it runs: its state, and
/// its status, instances and parked streams (retried or skipped by the running runner).
pub struct SagaHandle<St: SqlStore, S: Saga> {
    events: RunnerHandle<St, SagaEvents<S, St>>,
    work: tokio::sync::watch::Receiver<RunnerState>,
    core: Arc<Core<S, St>>,
}

impl<St: SqlStore, S: Saga> Clone for SagaHandle<St, S> {
    fn clone(&self) -> Self {
        Self {
            events: self.events.clone(),
            work: self.work.clone(),
            core: Arc::clone(&self.core),
        }
    }
}

impl<St: SqlStore, S: Saga> std::fmt::Debug for SagaHandle<St, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SagaHandle")
            .field("saga", &S::NAME)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl<St: SqlStore, S: Saga> SagaHandle<St, S> {
    /// What the saga runner is doing: stopped when either side stopped, retrying when either
    /// side is, else as its event side (running, or on standby while another instance handles
    /// the events).
    #[must_use]
    pub fn state(&self) -> RunnerState {
        let events = self.events.state();
        let work = self.work.borrow();
        match (&events, &*work) {
            (RunnerState::Stopped { .. }, _) => events,
            (_, RunnerState::Stopped { error: Some(_) } | RunnerState::Retrying { .. }) => {
                work.clone()
            }
            _ => events,
        }
    }

    /// Where the saga stands, with the state of its runner.
    ///
    /// # Errors
    /// [`RunnerError::NotRunning`], or a store error.
    pub async fn status(&self) -> Result<SagaStatus, SagaError> {
        let mut events = self.events.status().await?;
        events.runner = self.state();
        self.core.status(events).await.map_err(SagaError::from)
    }

    /// An instance, as stored.
    ///
    /// # Errors
    /// A store error, or a state that does not decode.
    pub async fn instance(&self, saga_id: &str) -> Result<Option<SagaInstance<S>>, Error> {
        self.core.instance(saga_id).await
    }

    /// The streams parked in the saga's dead-letter queue.
    ///
    /// # Errors
    /// [`RunnerError::NotRunning`], or a store error.
    pub async fn parked(&self) -> Result<Vec<ParkedStream>, RunnerError> {
        self.events.parked().await
    }

    /// Has the running runner handle a parked stream's events again.
    ///
    /// # Errors
    /// [`RunnerError::NotRunning`], [`RunnerError::Standby`], or a store error.
    pub async fn retry_parked(&self, stream_id: &str) -> Result<RetryOutcome, RunnerError> {
        self.events.retry_parked(stream_id).await
    }

    /// Has the running runner skip a parked stream's first event.
    ///
    /// # Errors
    /// [`RunnerError::NotRunning`], or a store error.
    pub async fn skip_parked(&self, stream_id: &str) -> Result<Option<u64>, RunnerError> {
        self.events.skip_parked(stream_id).await
    }
}
