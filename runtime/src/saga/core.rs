//! What a saga runner does, whatever its store: handle an event, a timeout or a refused command
//! for an instance (its state, the commands it sends and the timeouts it schedules written in
//! one transaction), deliver the outbox in order, fire due timeouts. The tables are reached
//! through [`Tables`], over the store's SQL.

use std::borrow::Cow;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use uuid::Uuid;

use super::bus::{CommandBus, DispatchError, Dispatched};
use super::tables::{Deadline, Outbound, Pending, StoredInstance, Tables, time};
use super::{Rejection, Role, Saga, SagaContext, command_id, timeout_id};
use crate::clock::Clock;
use crate::command::CommandContext;
use crate::envelope::RecordedEvent;
use crate::error::Error;
use crate::projection::{
    HandlerError, Projection, ProjectionStatus, RunnerError, RunnerState, RunsOn,
};
use crate::store::{SqlStore, Tx, check_stream_id};

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

impl SagaError {
    /// Whether waiting and trying again may succeed (see [`Error::is_transient`]).
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Store(error) => error.is_transient(),
            Self::Events(error) => error.is_transient(),
            Self::Dispatch { cause, .. } => cause.is_transient(),
        }
    }
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
    /// Whether it was erased with a data subject it handled personal data of (see
    /// [`crate::pii`]): it has completed, and its state is the default.
    pub erased: bool,
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
    /// Instances erased with a data subject (counted among the completed).
    pub erased: u64,
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

/// How many refusals of commands to invalid stream ids one handling hands back to the saga's
/// `#[rejected]` handler (which may send more), so that a saga that keeps doing so ends.
const MAX_IMMEDIATE_REFUSALS: usize = 100;

/// A saga's runner state, whatever the store.
pub(crate) struct Core<S, St> {
    pub tables: Tables<St>,
    pub bus: CommandBus,
    pub clock: Arc<dyn Clock>,
    pub dispatch_batch: usize,
    /// Wakes this process's dispatcher (after a batch that may have sent commands committed).
    pub wake: Arc<tokio::sync::Notify>,
    /// The state of the command and timeout side (running, or retrying after failures).
    pub work_state: tokio::sync::watch::Sender<RunnerState>,
    pub saga: PhantomData<fn() -> S>,
}

/// The saga's event side, run by its store's projection runner.
pub(crate) struct SagaEvents<S, St> {
    pub core: Arc<Core<S, St>>,
}

impl<S: Saga, St> std::fmt::Debug for SagaEvents<S, St> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SagaEvents")
            .field("saga", &S::NAME)
            .finish_non_exhaustive()
    }
}

impl<S: Saga, St: SqlStore> Projection for SagaEvents<S, St> {
    const NAME: &'static str = S::NAME;
    const VERSION: u32 = 1;
    const EVENT_TYPES: &'static [&'static str] = S::EVENT_TYPES;
    const KIND: &'static str = "saga";

    fn handle<'a>(
        &'a mut self,
        event: &'a RecordedEvent,
        tx: &'a mut Tx<'_>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send + 'a {
        self.core.on_event(event, tx)
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
    erased: bool,
    correlation_id: Uuid,
}

fn decode<S: Saga>(saga_id: &str, stored: StoredInstance) -> Result<Loaded<S>, Error> {
    let state = if stored.erased {
        S::default()
    } else {
        serde_json::from_str(&stored.state).map_err(|cause| Error::SagaState {
            saga: S::NAME,
            saga_id: saga_id.to_owned(),
            cause,
        })?
    };
    Ok(Loaded {
        state,
        completed: stored.completed,
        erased: stored.erased,
        correlation_id: stored.correlation_id,
    })
}

impl<S: Saga, St: SqlStore> RunsOn<St> for SagaEvents<S, St> {}

impl<S: Saga, St: SqlStore> Core<S, St> {
    /// Publishes the command and timeout side's state (when it changed), and records it as
    /// metrics.
    fn publish(&self, state: RunnerState) {
        self.work_state.send_if_modified(|current| {
            let changed = *current != state;
            if changed {
                crate::metrics::runner_state(
                    "saga",
                    S::NAME,
                    state == RunnerState::Running,
                    matches!(state, RunnerState::Retrying { .. }),
                );
            }
            *current = state;
            changed
        });
    }

    async fn load(&self, tx: &mut Tx<'_>, saga_id: &str) -> Result<Option<Loaded<S>>, Error> {
        match self.tables.lock_instance(tx, S::NAME, saga_id).await? {
            Some(stored) => decode(saga_id, stored).map(Some),
            None => Ok(None),
        }
    }

    pub async fn on_event(
        &self,
        event: &RecordedEvent,
        tx: &mut Tx<'_>,
    ) -> Result<(), HandlerError> {
        let Some(association) = S::associate(event)? else {
            return Ok(());
        };
        let saga_id = association.saga_id.as_str();
        let loaded = self.load(tx, saga_id).await.map_err(database(event))?;
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
        self.save(tx, &mut state, context)
            .await
            .map_err(database(event))?;
        // The instance may hold the event's personal data now: forgetting its subject erases
        // the instance.
        if let Some(key) = event.data_key.filter(|_| !event.shredded)
            && self
                .tables
                .record_data_key(tx, S::NAME, saga_id, key)
                .await
                .map_err(database(event))?
        {
            tracing::info!(saga = S::NAME, saga_id, event_id = %event.event_id, "the event's data subject was forgotten while the saga handled it: the instance is erased");
        }
        Ok(())
    }

    /// Writes an instance's state and what its handler did ([`Core::write`]). Commands sent to
    /// stream ids no store accepts are refused at once and handed to the saga's `#[rejected]`
    /// handler in the same transaction (what it does is written in turn).
    async fn save(
        &self,
        tx: &mut Tx<'_>,
        state: &mut S,
        context: SagaContext<S>,
    ) -> Result<(), Error> {
        let mut contexts = vec![context];
        let mut handed_back = 0;
        while let Some(context) = contexts.pop() {
            let refused = self.write(tx, state, &context).await?;
            if context.completed {
                continue; // a completed instance handles no more refusals
            }
            for rejection in refused {
                handed_back += 1;
                if handed_back > MAX_IMMEDIATE_REFUSALS {
                    tracing::warn!(
                        saga = S::NAME,
                        saga_id = context.saga_id(),
                        "the saga keeps sending commands to invalid stream ids; the later refusals stay on record in the outbox only"
                    );
                    return Ok(());
                }
                let mut next = SagaContext::new(
                    context.saga_id(),
                    rejection.command_id,
                    context.correlation_id(),
                    self.clock.now(),
                );
                state.rejected(&rejection, &mut next);
                if let Some(cause) = next.error.take() {
                    return Err(Error::Encode {
                        event_type: "saga command",
                        cause,
                    });
                }
                contexts.push(next);
            }
        }
        Ok(())
    }

    /// Writes an instance's state, its new commands and timeouts, its cancelled timeouts.
    /// A command to a stream id no store accepts is recorded in the outbox as refused (its id
    /// escaped, so that any store can hold it) and returned, never delivered.
    async fn write(
        &self,
        tx: &mut Tx<'_>,
        state: &S,
        context: &SagaContext<S>,
    ) -> Result<Vec<Rejection>, Error> {
        let saga_id = context.saga_id();
        let state = serde_json::to_string(state).map_err(|cause| Error::Encode {
            event_type: "saga state",
            cause,
        })?;
        self.tables
            .save_instance(
                tx,
                S::NAME,
                saga_id,
                &state,
                context.completed,
                context.correlation_id(),
            )
            .await?;
        let mut refused = Vec::new();
        if !context.commands.is_empty() {
            let mut commands: Vec<Outbound<'_>> = Vec::with_capacity(context.commands.len());
            for (i, c) in context.commands.iter().enumerate() {
                let id = command_id(S::NAME, saga_id, context.cause(), i);
                let stream_id = match check_stream_id(&c.stream_id) {
                    Ok(()) => Cow::Borrowed(c.stream_id.as_str()),
                    Err(problem) => {
                        let error = Error::InvalidStreamId {
                            stream_id: c.stream_id.clone(),
                            event_type: None,
                            problem,
                        };
                        tracing::warn!(saga = S::NAME, saga_id, command = c.command_type, %error, "saga command refused: its stream id is invalid");
                        refused.push(Rejection {
                            command_id: id,
                            command_type: c.command_type.to_owned(),
                            stream_id: c.stream_id.clone(),
                            reason: error.to_string(),
                        });
                        Cow::Owned(c.stream_id.escape_debug().to_string())
                    }
                };
                commands.push(Outbound {
                    ord: i,
                    command_id: id.to_string(),
                    command_type: c.command_type,
                    stream_id,
                    payload: &c.payload,
                });
            }
            self.tables
                .enqueue(
                    tx,
                    S::NAME,
                    saga_id,
                    context.correlation_id(),
                    context.cause(),
                    &commands,
                )
                .await?;
            for rejection in &refused {
                self.tables
                    .mark_command(
                        tx,
                        rejection.command_id,
                        "rejected",
                        Some(&rejection.reason),
                    )
                    .await?;
            }
        }
        if context.completed || !context.cancelled.is_empty() {
            self.tables
                .cancel_timeouts(tx, S::NAME, saga_id, &context.cancelled, context.completed)
                .await?;
        }
        if !context.completed && !context.timeouts.is_empty() {
            let deadlines: Vec<Deadline<'_>> = context
                .timeouts
                .iter()
                .enumerate()
                .map(|(i, t)| Deadline {
                    timeout_id: timeout_id(S::NAME, saga_id, context.cause(), i).to_string(),
                    timeout_type: t.timeout_type,
                    payload: &t.payload,
                    due_at: time(t.due_at),
                })
                .collect();
            self.tables
                .schedule(tx, S::NAME, saga_id, &deadlines)
                .await?;
        }
        Ok(refused)
    }

    /// Delivers pending commands, in order, until none is left (or another process is
    /// delivering them). Returns how many were delivered. Each command is acknowledged as soon
    /// as it is delivered, so a crash delivers at most one command again (and its aggregate
    /// recognises it).
    pub async fn dispatch(&self) -> Result<u64, SagaError> {
        let mut delivered = 0;
        loop {
            let Some(mut lease) = self.tables.lock_dispatch(S::NAME).await? else {
                return Ok(delivered); // another instance delivers them
            };
            let pending = self.tables.pending(S::NAME, self.dispatch_batch).await;
            let result = match pending {
                Ok(pending) if pending.is_empty() => Ok(0),
                Ok(pending) => self.deliver_all(pending, &mut lease).await,
                Err(error) => Err(error.into()),
            };
            lease.release().await;
            match result? {
                0 => return Ok(delivered),
                n => delivered += n,
            }
        }
    }

    /// Delivers `pending` in order while the dispatch lease holds: it is checked before each
    /// command, so a dispatcher whose lease connection died stops before another takes over
    /// (a command in flight then may be delivered by both; its aggregate recognises it).
    async fn deliver_all(
        &self,
        pending: Vec<Pending>,
        lease: &mut crate::store::sql::Lease,
    ) -> Result<u64, SagaError> {
        let mut delivered = 0;
        for pending in &pending {
            lease.check().await?;
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
        let mut context = CommandContext::new()
            .command_id(pending.command_id)
            .correlation_id(pending.correlation_id)
            .metadata("saga", S::NAME)
            .metadata("saga_id", pending.saga_id.as_str())
            .metadata("command", pending.command_type.as_str())
            .metadata("command_causation_id", pending.causation_id.to_string());
        // A tenant's saga commands its own tenant's aggregates: a route to another tenant's
        // repository refuses the command (`Error::TenantMismatch`).
        if let Some(tenant) = self.tables.store.tenant() {
            context = context.tenant(tenant);
        }
        let span = tracing::info_span!(
            "factum.saga.dispatch",
            otel.name = %format_args!("saga {} sends {}", S::NAME, pending.command_type),
            saga = S::NAME,
            saga_id = %pending.saga_id,
            command = %pending.command_type,
            command_id = %pending.command_id,
        );
        // Delivered in the trace of the event that queued it (its events continue it).
        crate::trace::continue_in(&span, pending.traceparent.as_deref());
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
        let mut transaction = self.tables.begin().await?;
        let mut tx = transaction.tx();
        self.tables
            .mark_command(&mut tx, pending.command_id, status, refusal.as_deref())
            .await?;
        if let Some(reason) = refusal {
            match self.on_rejection(&mut tx, pending, reason.clone()).await {
                Ok(()) => {}
                // The instance is parked: the refusal stays on record, the outbox flows on.
                Err(error @ Error::SagaState { .. }) => {
                    tracing::error!(saga = S::NAME, saga_id = %pending.saga_id, command_id = %pending.command_id, %error, "refused command not handed to its instance");
                    let note = format!("{reason}; not handed to `#[rejected]`: {error}");
                    self.tables
                        .mark_command(&mut tx, pending.command_id, status, Some(&note))
                        .await?;
                }
                Err(error) => return Err(error),
            }
        }
        transaction.commit().await
    }

    /// A refused command goes back to its instance's `#[rejected]` handler.
    async fn on_rejection(
        &self,
        tx: &mut Tx<'_>,
        pending: &Pending,
        reason: String,
    ) -> Result<(), Error> {
        let Some(loaded) = self.load(tx, &pending.saga_id).await? else {
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
        self.save(tx, &mut state, context).await
    }

    /// Fires the timeouts due by the clock, each in its own transaction with its instance. The
    /// timeouts of an instance whose state does not decode stay pending (the instance is
    /// parked until its state is repaired) and the others fire.
    pub async fn fire_due_timeouts(&self) -> Result<u64, Error> {
        let mut fired = 0;
        let mut parked = std::collections::HashSet::new();
        loop {
            let due = self
                .tables
                .due(S::NAME, self.clock.now(), 100 + parked.len())
                .await?;
            let due: Vec<_> = due
                .into_iter()
                .filter(|(timeout_id, _)| !parked.contains(timeout_id))
                .collect();
            if due.is_empty() {
                return Ok(fired);
            }
            for (timeout_id, saga_id) in &due {
                match self.fire(*timeout_id, saga_id).await {
                    Ok(true) => fired += 1,
                    Ok(false) => {}
                    Err(error @ Error::SagaState { .. }) => {
                        tracing::error!(saga = S::NAME, saga_id, %timeout_id, %error, "saga timeout left pending: its instance is parked");
                        parked.insert(*timeout_id);
                    }
                    Err(error) => return Err(error),
                }
            }
        }
    }

    /// Fires one timeout: locks its instance first (as events do), then the timeout.
    async fn fire(&self, timeout_id: Uuid, saga_id: &str) -> Result<bool, Error> {
        let mut transaction = self.tables.begin().await?;
        let mut tx = transaction.tx();
        let loaded = self.load(&mut tx, saga_id).await?;
        let Some(timeout) = self.tables.lock_timeout(&mut tx, timeout_id).await? else {
            return Ok(false); // fired or cancelled meanwhile
        };
        let (status, error) = match loaded {
            Some(loaded) if !loaded.completed => {
                let mut state = loaded.state;
                let mut context =
                    SagaContext::new(saga_id, timeout_id, loaded.correlation_id, self.clock.now());
                match state.timeout(&timeout, &mut context) {
                    Ok(()) if context.error.is_none() => {
                        self.save(&mut tx, &mut state, context).await?;
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
        self.tables
            .mark_timeout(&mut tx, timeout_id, status, error.as_deref())
            .await?;
        transaction.commit().await?;
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
        let Some(stored) = self.tables.read_instance(S::NAME, saga_id).await? else {
            return Ok(None);
        };
        let loaded = decode::<S>(saga_id, stored)?;
        Ok(Some(SagaInstance {
            saga_id: saga_id.to_owned(),
            state: loaded.state,
            completed: loaded.completed,
            erased: loaded.erased,
            correlation_id: loaded.correlation_id,
        }))
    }

    /// The status, around the event side's.
    pub async fn status(&self, events: ProjectionStatus) -> Result<SagaStatus, Error> {
        let [
            active,
            completed,
            pending,
            rejected,
            failed,
            timeouts,
            erased,
        ] = self.tables.counts(S::NAME).await?;
        Ok(SagaStatus {
            events,
            active,
            completed,
            pending_commands: pending,
            rejected_commands: rejected,
            failed_commands: failed,
            pending_timeouts: timeouts,
            erased,
        })
    }
}

/// Runs a saga until `shutdown`: `events` (the event side, stopping when told through the
/// watch), and the delivery of commands and firing of timeouts, woken by `core.wake` or every
/// poll interval. The saga runs as a whole: when the event side stops (on a permanent error),
/// so does the rest, and the error is returned.
pub(crate) async fn run<S: Saga, St: SqlStore>(
    core: Arc<Core<S, St>>,
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
    let events = async {
        let result = events.await;
        let _ = stop.send(true); // the rest stops with the event side
        result
    };
    let mut ended = stopped.clone();
    let trigger = async {
        tokio::select! {
            () = shutdown => {}
            _ = ended.wait_for(|stop| *stop) => {}
        }
        let _ = stop.send(true);
    };
    let work = work_loop(Arc::clone(&core), stopped, poll_interval);
    let (events, (), ()) = tokio::join!(events, work, trigger);
    if let Err(error) = &events {
        core.publish(RunnerState::Stopped {
            error: Some(error.to_string()),
        });
    }
    events?;
    Ok(())
}

/// How often a saga's dispatcher counts its outbox and instances for its metrics.
const MEASURE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Delivers commands and fires timeouts until stopped. A failure (the database unavailable, a
/// command that cannot be delivered now) is retried with backoff, the side's state saying so.
async fn work_loop<S: Saga, St: SqlStore>(
    core: Arc<Core<S, St>>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
    poll_interval: std::time::Duration,
) {
    let mut failing = crate::projection::Failing::default();
    core.publish(RunnerState::Running);
    let mut measured: Option<std::time::Instant> = None;
    while !*stopped.borrow() {
        let mut failure = None;
        match core.dispatch().await {
            Ok(delivered) => crate::metrics::saga_commands(S::NAME, delivered),
            Err(error) => {
                tracing::warn!(saga = S::NAME, %error, "saga commands not delivered; retrying");
                failure = Some(error.to_string());
            }
        }
        // Its outbox depth and active instances, as metrics, every few seconds.
        if measured.is_none_or(|at| at.elapsed() >= MEASURE_EVERY) {
            measured = Some(std::time::Instant::now());
            match core.tables.counts(S::NAME).await {
                Ok([active, _, pending, ..]) => {
                    crate::metrics::saga_status(S::NAME, pending, active)
                }
                Err(error) => tracing::debug!(saga = S::NAME, %error, "counts for metrics failed"),
            }
        }
        if let Err(error) = core.fire_due_timeouts().await {
            tracing::warn!(saga = S::NAME, %error, "saga timeouts not fired; retrying");
            failure = Some(error.to_string());
        }
        let wait = match failure {
            None => {
                if failing.recovered() {
                    tracing::info!(saga = S::NAME, "saga commands and timeouts recovered");
                }
                core.publish(RunnerState::Running);
                poll_interval
            }
            Some(error) => {
                let (attempts, state) = failing.record(error);
                core.publish(state);
                crate::failure::backoff(poll_interval, attempts)
            }
        };
        tokio::select! {
            () = core.wake.notified(), if !failing.is_failing() => {}
            () = tokio::time::sleep(wait) => {}
            _ = stopped.changed() => {}
        }
    }
}
