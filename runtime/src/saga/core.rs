//! What a saga runner does, whatever its store: handle an event, a timeout or a refused command
//! for an instance (its state, the commands it sends and the timeouts it schedules written in
//! one transaction), deliver the outbox in order, fire due timeouts. The store's SQL is behind
//! [`SagaBackend`] (PostgreSQL, SQLite).

use std::future::Future;
use std::marker::PhantomData;
use std::ops::DerefMut;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::bus::{CommandBus, DispatchError, Dispatched};
use super::clock::Clock;
use super::{FiredTimeout, Rejection, Role, Saga, SagaContext, command_id, timeout_id};
use crate::command::CommandContext;
use crate::envelope::RecordedEvent;
use crate::error::Error;
use crate::projection::{HandlerError, Projection, ProjectionStatus, RunnerError};

/// What stops a saga runner.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SagaError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] Error),

    /// The saga's event handling stopped (see [`RunnerError`]).
    #[error(transparent)]
    Events(#[from] RunnerError),

    /// A command could not be delivered now (the store is unavailable); it stays in the outbox
    /// and is delivered later.
    #[error("saga `{saga}`: {cause}")]
    Dispatch {
        /// The saga.
        saga: &'static str,
        /// Why.
        #[source]
        cause: DispatchError,
    },
}

/// An instance of a saga, as stored.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SagaInstance<S> {
    /// Its id.
    pub saga_id: String,
    /// Its state.
    pub state: S,
    /// Whether it has completed.
    pub completed: bool,
    /// The correlation id of its flow.
    pub correlation_id: Uuid,
}

/// Where a saga stands.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SagaStatus {
    /// The event side: checkpoint, lag, parked streams.
    pub events: ProjectionStatus,
    /// Instances running.
    pub active: u64,
    /// Instances completed.
    pub completed: u64,
    /// Commands waiting for delivery.
    pub pending_commands: u64,
    /// Commands refused by their aggregate.
    pub rejected_commands: u64,
    /// Commands that could not be delivered (no route, undecodable).
    pub failed_commands: u64,
    /// Timeouts scheduled and not yet fired or cancelled.
    pub pending_timeouts: u64,
}

/// What a runner's `settle` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Settled {
    /// Events handled.
    pub events: u64,
    /// Commands delivered (applied, recognised as applied, or refused).
    pub commands: u64,
    /// Timeouts fired.
    pub timeouts: u64,
}

/// An instance's row.
pub(crate) struct StoredInstance {
    pub state: String,
    pub completed: bool,
    pub correlation_id: Uuid,
}

/// A command in the outbox.
pub(crate) struct Pending {
    pub command_id: Uuid,
    pub saga_id: String,
    pub command_type: String,
    pub stream_id: String,
    pub payload: String,
    pub correlation_id: Uuid,
    pub causation_id: Uuid,
}

/// A command to put in the outbox: its id, type, stream and JSON.
pub(crate) struct Outbound<'a> {
    pub command_id: Uuid,
    pub command_type: &'a str,
    pub stream_id: &'a str,
    pub payload: &'a str,
}

/// A timeout to schedule: its id, type, JSON and due time.
pub(crate) struct Deadline<'a> {
    pub timeout_id: Uuid,
    pub timeout_type: &'a str,
    pub payload: &'a str,
    pub due_at: DateTime<Utc>,
}

/// The counts of [`SagaStatus`]: active, completed, pending, rejected, failed commands, pending
/// timeouts.
pub(crate) type Counts = [u64; 6];

/// A store's SQL for sagas. Every method taking a connection runs in the caller's transaction.
pub(crate) trait SagaBackend: Clone + Send + Sync + 'static {
    type Connection: Send;
    type Transaction: DerefMut<Target = Self::Connection> + Send;

    /// A write transaction (instances are changed in it).
    fn begin(&self) -> impl Future<Output = Result<Self::Transaction, Error>> + Send;

    fn commit(transaction: Self::Transaction) -> impl Future<Output = Result<(), Error>> + Send;

    /// An instance, its row locked for the transaction.
    fn lock_instance<'a>(
        &'a self,
        connection: &'a mut Self::Connection,
        saga: &'a str,
        saga_id: &'a str,
    ) -> impl Future<Output = Result<Option<StoredInstance>, Error>> + Send + 'a;

    /// An instance, not locked.
    fn read_instance<'a>(
        &'a self,
        saga: &'a str,
        saga_id: &'a str,
    ) -> impl Future<Output = Result<Option<StoredInstance>, Error>> + Send + 'a;

    fn save_instance<'a>(
        &'a self,
        connection: &'a mut Self::Connection,
        saga: &'a str,
        saga_id: &'a str,
        state: &'a str,
        completed: bool,
        correlation_id: Uuid,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'a;

    /// Adds commands to the outbox, in order (a command id already there is kept as is), and
    /// wakes the dispatcher once the transaction commits.
    fn enqueue<'a>(
        &'a self,
        connection: &'a mut Self::Connection,
        saga: &'a str,
        saga_id: &'a str,
        correlation_id: Uuid,
        causation_id: Uuid,
        commands: &'a [Outbound<'a>],
    ) -> impl Future<Output = Result<(), Error>> + Send + 'a;

    /// Cancels an instance's pending timeouts of these types (all of them with `all`).
    fn cancel_timeouts<'a>(
        &'a self,
        connection: &'a mut Self::Connection,
        saga: &'a str,
        saga_id: &'a str,
        types: &'a [&'static str],
        all: bool,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'a;

    fn schedule<'a>(
        &'a self,
        connection: &'a mut Self::Connection,
        saga: &'a str,
        saga_id: &'a str,
        deadlines: &'a [Deadline<'a>],
    ) -> impl Future<Output = Result<(), Error>> + Send + 'a;

    /// Held while one dispatcher of a saga delivers (across processes).
    type DispatchLock: Send;

    /// The dispatch lock of the saga, unless another dispatcher holds it.
    fn lock_dispatch<'a>(
        &'a self,
        saga: &'a str,
    ) -> impl Future<Output = Result<Option<Self::DispatchLock>, Error>> + Send + 'a;

    /// The first pending commands (at most `limit`), in order.
    fn pending<'a>(
        &'a self,
        lock: &'a mut Self::DispatchLock,
        saga: &'a str,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Pending>, Error>> + Send + 'a;

    fn unlock_dispatch(
        &self,
        lock: Self::DispatchLock,
    ) -> impl Future<Output = Result<(), Error>> + Send + '_;

    /// Records a command's delivery.
    fn mark_command<'a>(
        &'a self,
        connection: &'a mut Self::Connection,
        command_id: Uuid,
        status: &'a str,
        error: Option<&'a str>,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'a;

    /// Timeouts due at `now` (id, instance), oldest first.
    fn due<'a>(
        &'a self,
        saga: &'a str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<(Uuid, String)>, Error>> + Send + 'a;

    /// A pending timeout, locked for the transaction (`None`: fired or cancelled meanwhile).
    fn lock_timeout<'a>(
        &'a self,
        connection: &'a mut Self::Connection,
        timeout_id: Uuid,
    ) -> impl Future<Output = Result<Option<FiredTimeout>, Error>> + Send + 'a;

    fn mark_timeout<'a>(
        &'a self,
        connection: &'a mut Self::Connection,
        timeout_id: Uuid,
        status: &'a str,
        error: Option<&'a str>,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'a;

    fn counts<'a>(
        &'a self,
        saga: &'a str,
    ) -> impl Future<Output = Result<Counts, Error>> + Send + 'a;
}

/// A saga's runner state, whatever the store.
pub(crate) struct Core<S, B> {
    pub backend: B,
    pub bus: CommandBus,
    pub clock: Arc<dyn Clock>,
    pub dispatch_batch: usize,
    /// Wakes this process's dispatcher (after a batch that may have sent commands committed).
    pub wake: Arc<tokio::sync::Notify>,
    pub saga: PhantomData<fn() -> S>,
}

/// The saga's event side, run by its store's projection runner.
pub(crate) struct SagaEvents<S, B> {
    pub core: Arc<Core<S, B>>,
}

impl<S: Saga, B: SagaBackend> Projection for SagaEvents<S, B> {
    const NAME: &'static str = S::NAME;
    const VERSION: u32 = 1;
    const EVENT_TYPES: &'static [&'static str] = S::EVENT_TYPES;
    type Connection = B::Connection;

    fn handle<'a>(
        &'a mut self,
        event: &'a RecordedEvent,
        connection: &'a mut B::Connection,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send + 'a {
        self.core.on_event(event, connection)
    }

    fn committed(&mut self) {
        // The batch may have sent commands: the dispatcher of this process looks at once.
        self.core.wake.notify_one();
    }
}

fn database(event: &RecordedEvent) -> impl Fn(Error) -> HandlerError + '_ {
    move |error| HandlerError::handler(event, error)
}

/// An instance's state, decoded.
struct Loaded<S> {
    state: S,
    completed: bool,
    correlation_id: Uuid,
}

fn decode<S: Saga>(saga_id: &str, stored: StoredInstance) -> Result<Loaded<S>, Error> {
    let state = serde_json::from_str(&stored.state).map_err(|cause| {
        Error::Backend(
            format!(
                "the state of saga `{}` instance `{saga_id}` does not decode: {cause}",
                S::NAME
            )
            .into(),
        )
    })?;
    Ok(Loaded {
        state,
        completed: stored.completed,
        correlation_id: stored.correlation_id,
    })
}

impl<S: Saga, B: SagaBackend> Core<S, B> {
    async fn load(
        &self,
        connection: &mut B::Connection,
        saga_id: &str,
    ) -> Result<Option<Loaded<S>>, Error> {
        match self
            .backend
            .lock_instance(connection, S::NAME, saga_id)
            .await?
        {
            Some(stored) => decode(saga_id, stored).map(Some),
            None => Ok(None),
        }
    }

    pub async fn on_event(
        &self,
        event: &RecordedEvent,
        connection: &mut B::Connection,
    ) -> Result<(), HandlerError> {
        let Some(association) = S::associate(event)? else {
            return Ok(());
        };
        let saga_id = association.saga_id.as_str();
        let loaded = self
            .load(connection, saga_id)
            .await
            .map_err(database(event))?;
        let (mut state, correlation_id) = match (loaded, association.role) {
            (None, Role::Start) => (S::default(), event.correlation_id),
            (None, _) => {
                tracing::debug!(saga = S::NAME, saga_id, event_type = %event.event_type, "no running instance for the event");
                return Ok(());
            }
            (Some(loaded), _) if loaded.completed => return Ok(()),
            (Some(loaded), _) => (loaded.state, loaded.correlation_id),
        };
        let mut context =
            SagaContext::new(saga_id, event.event_id, correlation_id, self.clock.now());
        state.handle(event, &mut context)?;
        if association.role == Role::End {
            context.complete();
        }
        if let Some(error) = context.error.take() {
            return Err(HandlerError::handler(event, error));
        }
        self.save(connection, &state, &context)
            .await
            .map_err(database(event))
    }

    /// Writes an instance's state, its new commands and timeouts, its cancelled timeouts.
    async fn save(
        &self,
        connection: &mut B::Connection,
        state: &S,
        context: &SagaContext<S>,
    ) -> Result<(), Error> {
        let saga_id = context.saga_id();
        let state = serde_json::to_string(state).map_err(|cause| Error::Encode {
            event_type: "saga state",
            cause,
        })?;
        self.backend
            .save_instance(
                connection,
                S::NAME,
                saga_id,
                &state,
                context.completed,
                context.correlation_id(),
            )
            .await?;
        if !context.commands.is_empty() {
            let commands: Vec<Outbound<'_>> = context
                .commands
                .iter()
                .enumerate()
                .map(|(i, c)| Outbound {
                    command_id: command_id(S::NAME, saga_id, context.cause(), i),
                    command_type: c.command_type,
                    stream_id: &c.stream_id,
                    payload: &c.payload,
                })
                .collect();
            self.backend
                .enqueue(
                    connection,
                    S::NAME,
                    saga_id,
                    context.correlation_id(),
                    context.cause(),
                    &commands,
                )
                .await?;
        }
        if context.completed || !context.cancelled.is_empty() {
            self.backend
                .cancel_timeouts(
                    connection,
                    S::NAME,
                    saga_id,
                    &context.cancelled,
                    context.completed,
                )
                .await?;
        }
        if !context.completed && !context.timeouts.is_empty() {
            let deadlines: Vec<Deadline<'_>> = context
                .timeouts
                .iter()
                .enumerate()
                .map(|(i, t)| Deadline {
                    timeout_id: timeout_id(S::NAME, saga_id, context.cause(), i),
                    timeout_type: t.timeout_type,
                    payload: &t.payload,
                    due_at: t.due_at,
                })
                .collect();
            self.backend
                .schedule(connection, S::NAME, saga_id, &deadlines)
                .await?;
        }
        Ok(())
    }

    /// Delivers pending commands, in order, until none is left (or another process is
    /// delivering them). Returns how many were delivered. Each command is acknowledged as soon
    /// as it is delivered, so a crash delivers at most one command again (and its aggregate
    /// recognises it).
    pub async fn dispatch(&self) -> Result<u64, SagaError> {
        let mut delivered = 0;
        loop {
            let Some(mut lock) = self.backend.lock_dispatch(S::NAME).await? else {
                return Ok(delivered); // another instance delivers them
            };
            let pending = self
                .backend
                .pending(&mut lock, S::NAME, self.dispatch_batch)
                .await;
            let result = match pending {
                Ok(pending) if pending.is_empty() => Ok(0),
                Ok(pending) => self.deliver_all(pending).await,
                Err(error) => Err(error.into()),
            };
            self.backend.unlock_dispatch(lock).await?;
            match result? {
                0 => return Ok(delivered),
                n => delivered += n,
            }
        }
    }

    async fn deliver_all(&self, pending: Vec<Pending>) -> Result<u64, SagaError> {
        let mut delivered = 0;
        for pending in &pending {
            let outcome = self.deliver(pending).await;
            tracing::debug!(
                target: "factum::saga::delivered",
                saga = S::NAME,
                command_id = %pending.command_id,
                "command delivered; acknowledging it"
            );
            match outcome {
                Ok(Dispatched::Applied { .. } | Dispatched::AlreadyApplied) => {
                    self.acknowledge(pending, "dispatched", None).await?;
                }
                Ok(Dispatched::Rejected { reason }) => {
                    self.acknowledge(pending, "rejected", Some(reason)).await?;
                }
                Err(cause) if cause.is_transient() => {
                    return Err(SagaError::Dispatch {
                        saga: S::NAME,
                        cause,
                    });
                }
                Err(cause) => {
                    let reason = cause.to_string();
                    tracing::error!(saga = S::NAME, command_id = %pending.command_id, error = %reason, "command cannot be delivered");
                    self.acknowledge(pending, "failed", Some(reason)).await?;
                }
            }
            delivered += 1;
        }
        Ok(delivered)
    }

    async fn deliver(&self, pending: &Pending) -> Result<Dispatched, DispatchError> {
        let context = CommandContext::new()
            .command_id(pending.command_id)
            .correlation_id(pending.correlation_id)
            .metadata("saga", S::NAME)
            .metadata("saga_id", pending.saga_id.as_str())
            .metadata("command", pending.command_type.as_str())
            .metadata("command_causation_id", pending.causation_id.to_string());
        let span = tracing::debug_span!(
            "factum.saga.dispatch",
            saga = S::NAME,
            saga_id = %pending.saga_id,
            command = %pending.command_type,
            command_id = %pending.command_id,
        );
        tracing::Instrument::instrument(
            self.bus.dispatch(
                &pending.command_type,
                &pending.stream_id,
                &pending.payload,
                &context,
            ),
            span,
        )
        .await
    }

    /// Records a command's delivery; a refused or undeliverable one goes back to its saga
    /// instance's `#[rejected]` handler in the same transaction.
    async fn acknowledge(
        &self,
        pending: &Pending,
        status: &str,
        refusal: Option<String>,
    ) -> Result<(), Error> {
        let mut transaction = self.backend.begin().await?;
        self.backend
            .mark_command(
                &mut transaction,
                pending.command_id,
                status,
                refusal.as_deref(),
            )
            .await?;
        if let Some(reason) = refusal {
            self.on_rejection(&mut transaction, pending, reason).await?;
        }
        B::commit(transaction).await
    }

    /// A refused command goes back to its instance's `#[rejected]` handler.
    async fn on_rejection(
        &self,
        connection: &mut B::Connection,
        pending: &Pending,
        reason: String,
    ) -> Result<(), Error> {
        let Some(loaded) = self.load(connection, &pending.saga_id).await? else {
            return Ok(());
        };
        if loaded.completed {
            return Ok(());
        }
        let mut state = loaded.state;
        let mut context = SagaContext::new(
            &pending.saga_id,
            pending.command_id,
            loaded.correlation_id,
            self.clock.now(),
        );
        let rejection = Rejection {
            command_id: pending.command_id,
            command_type: pending.command_type.clone(),
            stream_id: pending.stream_id.clone(),
            reason,
        };
        state.rejected(&rejection, &mut context);
        if let Some(cause) = context.error.take() {
            return Err(Error::Encode {
                event_type: "saga command",
                cause,
            });
        }
        self.save(connection, &state, &context).await
    }

    /// Fires the timeouts due by the clock, each in its own transaction with its instance.
    pub async fn fire_due_timeouts(&self) -> Result<u64, Error> {
        let mut fired = 0;
        loop {
            let due = self.backend.due(S::NAME, self.clock.now(), 100).await?;
            if due.is_empty() {
                return Ok(fired);
            }
            for (timeout_id, saga_id) in &due {
                if self.fire(*timeout_id, saga_id).await? {
                    fired += 1;
                }
            }
        }
    }

    /// Fires one timeout: locks its instance first (as events do), then the timeout.
    async fn fire(&self, timeout_id: Uuid, saga_id: &str) -> Result<bool, Error> {
        let mut transaction = self.backend.begin().await?;
        let loaded = self.load(&mut transaction, saga_id).await?;
        let Some(timeout) = self
            .backend
            .lock_timeout(&mut transaction, timeout_id)
            .await?
        else {
            return Ok(false); // fired or cancelled meanwhile
        };
        let (status, error) = match loaded {
            Some(loaded) if !loaded.completed => {
                let mut state = loaded.state;
                let mut context =
                    SagaContext::new(saga_id, timeout_id, loaded.correlation_id, self.clock.now());
                match state.timeout(&timeout, &mut context) {
                    Ok(()) if context.error.is_none() => {
                        self.save(&mut transaction, &state, &context).await?;
                        ("fired", None)
                    }
                    Ok(()) => ("failed", context.error.map(|e| e.to_string())),
                    Err(error) => ("failed", Some(error.to_string())),
                }
            }
            _ => ("cancelled", None),
        };
        if let Some(error) = &error {
            tracing::error!(saga = S::NAME, saga_id, %timeout_id, error, "saga timeout failed");
        }
        self.backend
            .mark_timeout(&mut transaction, timeout_id, status, error.as_deref())
            .await?;
        B::commit(transaction).await?;
        Ok(status == "fired")
    }

    /// Handles events (with `handle_events`), delivers commands and fires due timeouts until
    /// nothing is left to do.
    pub async fn settle(
        &self,
        mut handle_events: impl AsyncFnMut() -> Result<u64, SagaError>,
    ) -> Result<Settled, SagaError> {
        let mut settled = Settled::default();
        loop {
            let events = handle_events().await?;
            let commands = self.dispatch().await?;
            let timeouts = self.fire_due_timeouts().await?;
            settled.events += events;
            settled.commands += commands;
            settled.timeouts += timeouts;
            if events == 0 && commands == 0 && timeouts == 0 {
                return Ok(settled);
            }
        }
    }

    /// An instance, as stored.
    pub async fn instance(&self, saga_id: &str) -> Result<Option<SagaInstance<S>>, Error> {
        let Some(stored) = self.backend.read_instance(S::NAME, saga_id).await? else {
            return Ok(None);
        };
        let loaded = decode::<S>(saga_id, stored)?;
        Ok(Some(SagaInstance {
            saga_id: saga_id.to_owned(),
            state: loaded.state,
            completed: loaded.completed,
            correlation_id: loaded.correlation_id,
        }))
    }

    /// The status, around the event side's.
    pub async fn status(&self, events: ProjectionStatus) -> Result<SagaStatus, Error> {
        let [active, completed, pending, rejected, failed, timeouts] =
            self.backend.counts(S::NAME).await?;
        Ok(SagaStatus {
            events,
            active,
            completed,
            pending_commands: pending,
            rejected_commands: rejected,
            failed_commands: failed,
            pending_timeouts: timeouts,
        })
    }
}

/// Runs a saga until `shutdown`: `events` (the event side, stopping when told through the
/// watch), and the delivery of commands and firing of timeouts, woken by `core.wake` or every
/// poll interval.
pub(crate) async fn run<S: Saga, B: SagaBackend>(
    core: Arc<Core<S, B>>,
    events: impl FnOnce(
        std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), RunnerError>> + Send>>,
    poll_interval: std::time::Duration,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), SagaError> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut events_stopped = stopped.clone();
    let events = events(Box::pin(async move {
        let _ = events_stopped.wait_for(|stop| *stop).await;
    }));
    let work = work_loop(core, stopped, poll_interval);
    let trigger = async move {
        shutdown.await;
        let _ = stop.send(true);
    };
    let (events, (), ()) = tokio::join!(events, work, trigger);
    events?;
    Ok(())
}

/// Delivers commands and fires timeouts until stopped.
async fn work_loop<S: Saga, B: SagaBackend>(
    core: Arc<Core<S, B>>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
    poll_interval: std::time::Duration,
) {
    while !*stopped.borrow() {
        if let Err(error) = core.dispatch().await {
            tracing::warn!(saga = S::NAME, %error, "saga commands not delivered; retrying");
        }
        if let Err(error) = core.fire_due_timeouts().await {
            tracing::warn!(saga = S::NAME, %error, "saga timeouts not fired; retrying");
        }
        tokio::select! {
            () = core.wake.notified() => {}
            () = tokio::time::sleep(poll_interval) => {}
            _ = stopped.changed() => {}
        }
    }
}

/// The methods both stores' saga runners share, on their `events` (the store's projection
/// runner), `core` and `poll_interval` fields and their `build` constructor.
macro_rules! runner_methods {
    () => {
        /// Uses `clock` for scheduling and firing timeouts (a
        /// [`ManualClock`](crate::saga::ManualClock) in tests).
        #[must_use]
        pub fn clock(self, clock: impl crate::saga::Clock) -> Self {
            let store = self.core.backend.store.clone();
            let bus = self.core.bus.clone();
            Self::build(store, bus, std::sync::Arc::new(clock), self.poll_interval)
        }

        /// Events per transaction (default 500).
        #[must_use]
        pub fn batch_size(mut self, batch_size: usize) -> Self {
            self.events = self.events.batch_size(batch_size);
            self
        }

        /// How often to look for events, commands and due timeouts when nothing wakes the
        /// runner (default 200 ms).
        #[must_use]
        pub fn poll_interval(mut self, poll_interval: std::time::Duration) -> Self {
            self.events = self.events.poll_interval(poll_interval);
            self.poll_interval = poll_interval;
            self
        }

        /// Retries of a failing event batch before its stream is parked (as for projections).
        #[must_use]
        pub fn retries(mut self, max_retries: u32, backoff: std::time::Duration) -> Self {
            self.events = self.events.retries(max_retries, backoff);
            self
        }

        /// Handles the events after the checkpoint (committing instances, outbox and timeouts
        /// with it). Returns the events handled.
        ///
        /// # Errors
        /// As the projection runner's `catch_up`.
        pub async fn handle_events(&mut self) -> Result<u64, crate::saga::SagaError> {
            Ok(self.events.catch_up().await?)
        }

        /// Delivers the pending commands of the outbox, in order. Returns how many.
        ///
        /// # Errors
        /// [`SagaError::Dispatch`](crate::saga::SagaError::Dispatch) when the store cannot take
        /// a command now (it stays pending), or a store error.
        pub async fn dispatch(&self) -> Result<u64, crate::saga::SagaError> {
            self.core.dispatch().await
        }

        /// Fires the timeouts that are due by the runner's clock. Returns how many fired.
        ///
        /// # Errors
        /// A store error.
        pub async fn fire_due_timeouts(&self) -> Result<u64, crate::saga::SagaError> {
            Ok(self.core.fire_due_timeouts().await?)
        }

        /// Handles events, delivers commands and fires due timeouts until nothing is left to do
        /// (the commands' events handled, their commands delivered...).
        ///
        /// # Errors
        /// As the steps.
        pub async fn settle(&mut self) -> Result<crate::saga::Settled, crate::saga::SagaError> {
            let (events, core) = (&mut self.events, &self.core);
            core.settle(async || Ok(events.catch_up().await?)).await
        }

        /// The streams whose events the saga could not handle, parked in the dead-letter queue
        /// (as for projections) while other streams flow on.
        ///
        /// # Errors
        /// A store error.
        pub async fn parked(
            &self,
        ) -> Result<Vec<crate::projection::ParkedStream>, crate::error::Error> {
            self.events.parked().await
        }

        /// Handles a parked stream's events again, in order, stopping at the first failure.
        ///
        /// # Errors
        /// A store error.
        pub async fn retry_parked(
            &mut self,
            stream_id: &str,
        ) -> Result<crate::projection::RetryOutcome, crate::error::Error> {
            self.events.retry_parked(stream_id).await
        }

        /// Skips a parked stream's first event (kept on record); returns its version.
        ///
        /// # Errors
        /// A store error.
        pub async fn skip_parked(
            &mut self,
            stream_id: &str,
        ) -> Result<Option<u64>, crate::error::Error> {
            self.events.skip_parked(stream_id).await
        }

        /// An instance, as stored.
        ///
        /// # Errors
        /// A store error, or a state that does not decode.
        pub async fn instance(
            &self,
            saga_id: &str,
        ) -> Result<Option<crate::saga::SagaInstance<S>>, crate::error::Error> {
            self.core.instance(saga_id).await
        }

        /// Where the saga stands: its event lag and parked streams, instances, outbox,
        /// timeouts.
        ///
        /// # Errors
        /// A store error.
        pub async fn status(&self) -> Result<crate::saga::SagaStatus, crate::error::Error> {
            let events = self.events.status().await?;
            self.core.status(events).await
        }
    };
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) use runner_methods;
