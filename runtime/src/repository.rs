//! The command executor: load an aggregate, handle a command, append the events with the loaded
//! version as the expected version, and retry on a concurrency conflict.

use std::fmt;
use std::marker::PhantomData;

use tracing::Instrument as _;

use crate::aggregate::{Aggregate, Handle};
use crate::command::CommandContext;
use crate::envelope::{Envelope, NewEvent, RecordedEvent};
use crate::error::{Error, ExecuteError, Result};
use crate::store::{EventStore, ExpectedVersion};

/// An aggregate's state as rebuilt from its stream.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Loaded<A> {
    /// The state after the last event.
    pub state: A,
    /// The version of the last event applied (0: new stream).
    pub version: u64,
}

/// Runs commands against one aggregate type on a store.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use factum::{MemoryStore, Repository};
/// # #[factum::event] #[derive(Debug, Clone, PartialEq)] pub struct Incremented;
/// # #[factum::event] #[derive(Debug, Clone, PartialEq)] pub enum CounterEvent { Incremented(Incremented) }
/// # pub struct Increment;
/// # #[derive(Default)] pub struct Counter { value: u64 }
/// # #[factum::aggregate(events = CounterEvent)]
/// # impl Counter {
/// #     #[apply] fn incremented(&mut self, _: &Incremented) { self.value += 1; }
/// #     #[command] fn increment(&self, _: &Increment) -> Result<Incremented, std::convert::Infallible> { Ok(Incremented) }
/// # }
///
/// let counters = Repository::<Counter, _>::new(MemoryStore::new());
/// counters.execute("counter-1", Increment).await?;
/// let committed = counters.execute("counter-1", Increment).await?;
/// assert_eq!(committed[0].stream_version, 2);
/// assert_eq!(counters.load("counter-1").await?.state.value, 2);
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub struct Repository<A, S> {
    store: S,
    max_retries: u32,
    aggregate: PhantomData<fn() -> A>,
}

impl<A, S: fmt::Debug> fmt::Debug for Repository<A, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Repository")
            .field("store", &self.store)
            .field("max_retries", &self.max_retries)
            .finish_non_exhaustive()
    }
}

impl<A, S: Clone> Clone for Repository<A, S> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            max_retries: self.max_retries,
            aggregate: PhantomData,
        }
    }
}

impl<A: Aggregate, S: EventStore> Repository<A, S> {
    /// Retries after a concurrency conflict, by default.
    pub const DEFAULT_MAX_RETRIES: u32 = 3;

    /// A repository of aggregates of type `A` on `store`.
    pub fn new(store: S) -> Self {
        Self {
            store,
            max_retries: Self::DEFAULT_MAX_RETRIES,
            aggregate: PhantomData,
        }
    }

    /// How many times a command is retried (reloading the aggregate) after a concurrency
    /// conflict before [`ExecuteError::Conflict`] is returned. 0: never.
    #[must_use]
    pub fn max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Rebuilds an aggregate from its stream. A stream that does not exist loads as the default
    /// state at version 0.
    ///
    /// # Errors
    /// [`Error::Decode`] when a stored event does not decode (the load stops; nothing is
    /// skipped), [`Error::AggregateTypeMismatch`] when the stream belongs to another aggregate
    /// type, or a store error.
    pub async fn load(&self, id: &str) -> Result<Loaded<A>> {
        let events = self.store.read_stream(id, 1..).await?;
        rehydrate(id, &events)
    }

    /// Executes a command in a new context (a fresh command id, which is also the correlation
    /// id).
    ///
    /// # Errors
    /// As [`Repository::execute_with`].
    pub async fn execute<C>(
        &self,
        id: &str,
        command: C,
    ) -> Result<Vec<Envelope<A::Event>>, ExecuteError<<A as Handle<C>>::Error>>
    where
        A: Handle<C>,
        C: Sync,
    {
        self.execute_with(id, command, &CommandContext::new()).await
    }

    /// Loads the aggregate, handles the command, and appends the events expecting the loaded
    /// version; on a conflict, reloads and handles the command again, up to the retry limit.
    /// Returns the committed events; a command that produces no events appends nothing.
    ///
    /// # Errors
    /// [`ExecuteError::Rejected`] with the domain error, [`ExecuteError::Conflict`] after the
    /// last retry, or [`ExecuteError::Store`].
    pub async fn execute_with<C>(
        &self,
        id: &str,
        command: C,
        context: &CommandContext,
    ) -> Result<Vec<Envelope<A::Event>>, ExecuteError<<A as Handle<C>>::Error>>
    where
        A: Handle<C>,
        C: Sync,
    {
        let span = tracing::debug_span!(
            "factum.execute",
            aggregate = A::TYPE,
            stream_id = id,
            command_id = %context.command_id,
            attempts = tracing::field::Empty,
        );
        self.execute_attempts(id, &command, context)
            .instrument(span)
            .await
    }

    async fn execute_attempts<C>(
        &self,
        id: &str,
        command: &C,
        context: &CommandContext,
    ) -> Result<Vec<Envelope<A::Event>>, ExecuteError<<A as Handle<C>>::Error>>
    where
        A: Handle<C>,
        C: Sync,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let loaded = self.load(id).await?;
            let events = loaded
                .state
                .handle(command)
                .map_err(ExecuteError::Rejected)?;
            if events.is_empty() {
                return Ok(Vec::new());
            }
            let new_events = events
                .iter()
                .map(|event| NewEvent::from_event(event, context))
                .collect::<Result<Vec<_>>>()?;
            let expected = ExpectedVersion::Exact(loaded.version);
            match self.store.append(id, A::TYPE, expected, new_events).await {
                Ok(recorded) => {
                    tracing::Span::current().record("attempts", attempt);
                    return Ok(recorded
                        .into_iter()
                        .zip(events)
                        .map(|(envelope, event)| envelope.with_event(event))
                        .collect());
                }
                Err(conflict @ Error::Conflict { .. }) => {
                    if attempt > self.max_retries {
                        return Err(ExecuteError::Conflict {
                            stream_id: id.to_owned(),
                            attempts: attempt,
                            cause: conflict,
                        });
                    }
                    tracing::debug!(attempt, "concurrency conflict; reloading and retrying");
                }
                Err(other) => return Err(other.into()),
            }
        }
    }
}

/// Rebuilds an aggregate from its stored events, checking that they belong to its type.
///
/// # Errors
/// [`Error::AggregateTypeMismatch`] or [`Error::Decode`].
pub fn rehydrate<A: Aggregate>(stream_id: &str, events: &[RecordedEvent]) -> Result<Loaded<A>> {
    let mut state = A::default();
    let mut version = 0;
    if let Some(first) = events.first()
        && first.aggregate_type != A::TYPE
    {
        {
            return Err(Error::AggregateTypeMismatch {
                stream_id: stream_id.to_owned(),
                existing: first.aggregate_type.clone(),
                requested: A::TYPE.to_owned(),
            });
        }
    }
    for recorded in events {
        state.apply(&recorded.decode_event::<A::Event>()?);
        version = recorded.stream_version;
    }
    Ok(Loaded { state, version })
}
