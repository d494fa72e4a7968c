//! The command executor: load an aggregate, handle a command, append the events with the loaded
//! version as the expected version, and retry on a concurrency conflict. Optionally with
//! snapshots and a hot aggregate cache; also temporal queries (state as of a version or a time).

mod cache;
mod lanes;
mod load;

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument as _;

use self::cache::{AggregateCache, Cached, Forgets};
use self::lanes::{Lanes, Outcome};
pub use self::load::rehydrate;
use crate::aggregate::{Aggregate, Handle};
use crate::clock::{Clock, SystemClock};
use crate::command::CommandContext;
use crate::envelope::{Envelope, NewEvent};
use crate::error::{Error, ExecuteError, Result};
use crate::event::Payload;
use crate::snapshot::{Snapshot, SnapshotPolicy};
use crate::store::{EventStore, KnownHead};

/// What [`Repository::execute_once`] did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Executed<E> {
    /// The command was applied now: its events (none when it decided nothing).
    Applied(Vec<Envelope<E>>),
    /// The command had been applied before (its events are stored): nothing was done.
    AlreadyApplied {
        /// Where its events are.
        stream_id: String,
        /// The version of its first event.
        first_version: u64,
    },
}

/// What [`Repository::execute_detailed`] did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Execution<E> {
    /// The committed events (none when the command decided nothing).
    pub events: Vec<Envelope<E>>,
    /// How many times the command was handled: 1, plus one per concurrency conflict that
    /// made it reload and try again.
    pub attempts: u32,
}

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
    snapshots: Option<Snapshots<A>>,
    cache: Option<Arc<AggregateCache<A>>>,
    lanes: Option<Arc<Lanes<A>>>,
    clock: Arc<dyn Clock>,
}

/// When to take snapshots, and how to (de)serialize the state (captured where `A` is known to be
/// serializable, so that the rest of the repository needs no such bound).
struct Snapshots<A> {
    policy: SnapshotPolicy,
    encode: fn(&A) -> Result<Payload, serde_json::Error>,
    decode: fn(&Payload) -> Result<A, serde_json::Error>,
}

impl<A> Clone for Snapshots<A> {
    fn clone(&self) -> Self {
        Self {
            policy: self.policy,
            encode: self.encode,
            decode: self.decode,
        }
    }
}

impl<A, S: fmt::Debug> fmt::Debug for Repository<A, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Repository")
            .field("store", &self.store)
            .field("max_retries", &self.max_retries)
            .field("snapshots", &self.snapshots.as_ref().map(|s| s.policy))
            .field("cached", &self.cache.as_ref().map(|c| c.len()))
            .finish_non_exhaustive()
    }
}

/// Clones share the store and the cache.
impl<A, S: Clone> Clone for Repository<A, S> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            max_retries: self.max_retries,
            snapshots: self.snapshots.clone(),
            cache: self.cache.clone(),
            lanes: self.lanes.clone(),
            clock: Arc::clone(&self.clock),
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
            snapshots: None,
            cache: None,
            lanes: None,
            clock: Arc::new(SystemClock),
        }
    }

    /// How many times a command is retried (reloading the aggregate) after a concurrency
    /// conflict before [`ExecuteError::Conflict`] is returned. 0: never.
    #[must_use]
    pub fn max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    /// Takes a snapshot of the state whenever a command makes the stream cross a multiple of
    /// `every` events, and loads from the latest snapshot: `snapshots(SnapshotPolicy::every(n))`.
    #[must_use]
    pub fn snapshot_every(self, every: u64) -> Self
    where
        A: Serialize + DeserializeOwned,
    {
        self.snapshots(SnapshotPolicy::every(every))
    }

    /// Takes snapshots by `policy` (every N events, after slow loads, after loads from an old
    /// snapshot) and loads from the latest one. A snapshot carries
    /// [`Aggregate::STATE_VERSION`]; one of another version, type or shape is ignored (with a
    /// warning) and the state rebuilt from the events. A snapshot that cannot be saved is
    /// logged, never an error of the command or load that took it.
    #[must_use]
    pub fn snapshots(mut self, policy: SnapshotPolicy) -> Self
    where
        A: Serialize + DeserializeOwned,
    {
        self.snapshots = Some(Snapshots {
            policy,
            encode: |state| Payload::encode(state),
            decode: Payload::decode,
        });
        self
    }

    /// The clock the snapshot policy goes by (how long a load took, how old a snapshot is, when
    /// one was taken): the system clock by default; a test's own to control time.
    #[must_use]
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Keeps up to `capacity` aggregates in process (least recently used evicted first), so that
    /// a command on a cached aggregate costs one round trip. Safe with other writers: the append
    /// still expects the cached version, and a conflict evicts the entry and reloads.
    #[must_use]
    pub fn cache(mut self, capacity: NonZeroUsize) -> Self {
        self.cache = Some(Arc::new(AggregateCache::new(capacity)));
        self
    }

    /// One writer per stream in this process, for hot aggregates that many tasks command at
    /// once: commands to one stream decide one after the other against the state after every
    /// event decided before them (kept in process while commands keep coming), and the events
    /// of commands that queued up meanwhile are appended together, one batch in flight per
    /// stream. No conflict between this repository's own commands reaches a caller; another
    /// process's write costs the batch a conflict, and its commands retry (within
    /// [`Repository::max_retries`]). More than `queue_limit` commands waiting for one stream
    /// get [`Error::StreamBusy`] (transient) instead of waiting without bound.
    ///
    /// A batch the store refuses for another reason than a conflict (an event too large, an
    /// id already stored, an outage) is stored not at all, and each of its commands then
    /// tries alone, as without this option, and gets its own outcome.
    #[must_use]
    pub fn serialize_streams(mut self, queue_limit: NonZeroUsize) -> Self {
        self.lanes = Some(Arc::new(Lanes::new(queue_limit.get())));
        self
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
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
        let execution = self.execute_detailed(id, command, context).await?;
        Ok(execution.events)
    }

    /// [`Repository::execute_with`], telling also how many attempts the command took (each
    /// concurrency conflict adds one): for metrics on contended streams. The `factum.execute`
    /// span records the same number in its `attempts` field.
    ///
    /// # Errors
    /// As [`Repository::execute_with`].
    pub async fn execute_detailed<C>(
        &self,
        id: &str,
        command: C,
        context: &CommandContext,
    ) -> Result<Execution<A::Event>, ExecuteError<<A as Handle<C>>::Error>>
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
        self.attempts(id, &command, context, false)
            .instrument(span)
            .await
    }

    /// Executes a command at most once, however often it is delivered: its events get ids
    /// derived from the command id ([`CommandContext::event_id`]), so a command already applied
    /// (redelivered after a crash between its execution and its acknowledgement) is recognised,
    /// and nothing is appended again. Give every delivery of one command the same command id.
    ///
    /// A command that produced no events leaves nothing to recognise: a redelivery handles it
    /// again.
    ///
    /// # Errors
    /// As [`Repository::execute_with`].
    pub async fn execute_once<C>(
        &self,
        id: &str,
        command: C,
        context: &CommandContext,
    ) -> Result<Executed<A::Event>, ExecuteError<<A as Handle<C>>::Error>>
    where
        A: Handle<C>,
        C: Sync,
    {
        let span = tracing::debug_span!(
            "factum.execute_once",
            aggregate = A::TYPE,
            stream_id = id,
            command_id = %context.command_id,
            attempts = tracing::field::Empty,
        );
        async {
            if let Some(first) = self.store.read_event(context.event_id(0)).await? {
                return Ok(Executed::AlreadyApplied {
                    stream_id: first.stream_id,
                    first_version: first.stream_version,
                });
            }
            match self.attempts(id, &command, context, true).await {
                Ok(execution) => Ok(Executed::Applied(execution.events)),
                // Another delivery of the command got there first.
                Err(ExecuteError::Store(Error::DuplicateEventId {
                    stream_id,
                    stream_version,
                    ..
                })) => Ok(Executed::AlreadyApplied {
                    stream_id,
                    first_version: stream_version,
                }),
                Err(error) => Err(error),
            }
        }
        .instrument(span)
        .await
    }

    /// Load, handle, append, retried on conflicts; `derived_ids`: the events' ids derive from
    /// the command id.
    async fn attempts<C>(
        &self,
        id: &str,
        command: &C,
        context: &CommandContext,
        derived_ids: bool,
    ) -> Result<Execution<A::Event>, ExecuteError<<A as Handle<C>>::Error>>
    where
        A: Handle<C>,
        C: Sync,
    {
        if let Some(requested) = &context.tenant
            && self.store.tenant() != Some(requested.as_str())
        {
            return Err(Error::TenantMismatch {
                requested: requested.clone(),
                store: self.store.tenant().map(str::to_owned),
            }
            .into());
        }
        if let Some(lanes) = &self.lanes {
            return self
                .attempts_in_lane(lanes, id, command, context, derived_ids)
                .await;
        }
        self.attempts_optimistic(id, command, context, derived_ids)
            .await
    }

    /// Load (or take from the cache), handle, append expecting the loaded version; reload and
    /// retry on a conflict.
    async fn attempts_optimistic<C>(
        &self,
        id: &str,
        command: &C,
        context: &CommandContext,
        derived_ids: bool,
    ) -> Result<Execution<A::Event>, ExecuteError<<A as Handle<C>>::Error>>
    where
        A: Handle<C>,
        C: Sync,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            // Read before the state is: a forget after it leaves the state out of the cache.
            let forgets = Forgets(self.store.forgets());
            let cached = self
                .cache
                .as_ref()
                .and_then(|cache| cache.take(id, forgets));
            let Cached { mut state, version } = match cached {
                Some(entry) => entry,
                None => {
                    let loaded = self.load(id).await?;
                    Cached {
                        state: loaded.state,
                        version: loaded.version,
                    }
                }
            };
            let events = match state.handle(command) {
                Ok(events) => events,
                Err(rejection) => {
                    self.keep(id, state, version, forgets);
                    return Err(ExecuteError::Rejected(rejection));
                }
            };
            if events.is_empty() {
                self.keep(id, state, version, forgets);
                return Ok(Execution {
                    events: Vec::new(),
                    attempts: attempt,
                });
            }
            let new_events = new_events(&events, context, derived_ids)?;
            // The version was read from the store (or committed to it) by this process.
            let head = KnownHead::new(version);
            match self.store.append_after(id, A::TYPE, head, new_events).await {
                Ok(recorded) => {
                    tracing::Span::current().record("attempts", attempt);
                    for event in &events {
                        state.apply(event);
                    }
                    let new_version = recorded.last().map_or(version, |e| e.stream_version);
                    self.after_commit(id, state, (version, new_version), forgets)
                        .await;
                    return Ok(Execution {
                        events: recorded
                            .into_iter()
                            .zip(events)
                            .map(|(envelope, event)| envelope.with_event(event))
                            .collect(),
                        attempts: attempt,
                    });
                }
                Err(conflict @ Error::Conflict { .. }) => {
                    // The state is stale: it is dropped, and the next attempt reloads.
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

    /// [`Repository::attempts`] through the stream's lane ([`Repository::serialize_streams`]).
    async fn attempts_in_lane<C>(
        &self,
        lanes: &Arc<Lanes<A>>,
        id: &str,
        command: &C,
        context: &CommandContext,
        derived_ids: bool,
    ) -> Result<Execution<A::Event>, ExecuteError<<A as Handle<C>>::Error>>
    where
        A: Handle<C>,
        C: Sync,
    {
        let ticket = lanes.enter(id)?;
        let lane = &ticket.lane;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let forgets = self.store.forgets();
            if lane.lock().head(forgets).is_none() {
                let loaded = self.load(id).await?;
                lane.lock().loaded(loaded.state, loaded.version, forgets);
            }
            // Decide against the lane's state, advance it, and take a seat in the batch.
            let (seat, events) = {
                let mut inner = lane.lock();
                let Some((state, version)) = inner.head(forgets) else {
                    attempt -= 1;
                    continue; // a batch failed meanwhile (or a subject was forgotten): load again
                };
                let events = match state.handle(command) {
                    Ok(events) => events,
                    Err(rejection) => return Err(ExecuteError::Rejected(rejection)),
                };
                if events.is_empty() {
                    return Ok(Execution {
                        events: Vec::new(),
                        attempts: attempt,
                    });
                }
                let new_events = new_events(&events, context, derived_ids)?;
                for event in &events {
                    state.apply(event);
                }
                let base = *version;
                *version += new_events.len() as u64;
                (inner.seat(base, new_events), events)
            };
            if seat.send {
                self.send_batches(id, lane).await;
            }
            let mut done = seat.done;
            let outcome = done
                .wait_for(Option::is_some)
                .await
                .map_err(|_| Error::Backend("a stream's batch was abandoned".into()))?
                .clone();
            match outcome {
                Some(Outcome::Committed(recorded)) => {
                    tracing::Span::current().record("attempts", attempt);
                    return Ok(Execution {
                        events: recorded[seat.range]
                            .iter()
                            .cloned()
                            .zip(events)
                            .map(|(envelope, event)| envelope.with_event(event))
                            .collect(),
                        attempts: attempt,
                    });
                }
                Some(Outcome::Failed { error, conflict }) => {
                    if !conflict {
                        // The store refused the batch (an event too large, an id already
                        // stored, the database down...): this command tries alone, outside the
                        // lane, so that it gets its own outcome, not another's.
                        drop(ticket);
                        return self
                            .attempts_optimistic(id, command, context, derived_ids)
                            .await;
                    }
                    let cause = Error::Backend(Box::new(SharedError(error)));
                    if attempt > self.max_retries {
                        return Err(ExecuteError::Conflict {
                            stream_id: id.to_owned(),
                            attempts: attempt,
                            cause,
                        });
                    }
                    tracing::debug!(attempt, "the batch met a conflict; reloading and retrying");
                }
                Some(Outcome::Untried) => {
                    // Decided on top of a batch the store refused: nothing of this command was
                    // tried, so deciding again is not another attempt. Each such round follows
                    // a refused batch whose members left the lane, so the rounds are bounded.
                    attempt -= 1;
                    tracing::debug!("the batch below was refused; deciding again");
                }
                None => {}
            }
        }
    }

    /// Appends the lane's waiting batches, one after the other, until none waits (or one
    /// fails); each member of each batch is told its outcome.
    async fn send_batches(&self, id: &str, lane: &lanes::Lane<A>) {
        // Should this task be cancelled while appending, the lane must not wait for it forever.
        let mut guard = lanes::Sending::new(lane);
        loop {
            let Some((base, events, done)) = lane.lock().next_batch() else {
                guard.finish();
                return;
            };
            let result = self
                .store
                .append_after(id, A::TYPE, KnownHead::new(base), events)
                .await;
            match result {
                Ok(recorded) => {
                    let version = recorded.last().map_or(base, |e| e.stream_version);
                    done.send_replace(Some(Outcome::Committed(Arc::new(recorded))));
                    // A snapshot when the batch crossed the interval and no later events are
                    // decided yet (the lane's state is then the committed one).
                    if let Some(policy) = &self.snapshots
                        && policy.policy.crosses_interval(base, version)
                    {
                        let encoded = lane.lock().state_at(version).map(policy.encode);
                        if let Some(encoded) = encoded {
                            self.save_encoded_snapshot(id, version, encoded).await;
                        }
                    }
                }
                Err(error) => {
                    let conflict = matches!(error, Error::Conflict { .. });
                    let error = Arc::new(error);
                    lane.lock().failed(conflict.then_some(&error));
                    done.send_replace(Some(Outcome::Failed { error, conflict }));
                    guard.finish();
                    return;
                }
            }
        }
    }

    /// Puts a state back into the cache, if there is one, unless the store forgot a data
    /// subject since it was read (when it had forgotten `forgets`).
    fn keep(&self, id: &str, state: A, version: u64, forgets: Forgets) {
        if let Some(cache) = &self.cache {
            let now = Forgets(self.store.forgets());
            cache.put(id, Cached { state, version }, forgets, now);
        }
    }

    /// After a successful append: takes a snapshot when the stream crossed a multiple of the
    /// snapshot interval, and caches the new state.
    async fn after_commit(
        &self,
        id: &str,
        state: A,
        (old_version, new_version): (u64, u64),
        forgets: Forgets,
    ) {
        if let Some(policy) = &self.snapshots
            && policy.policy.crosses_interval(old_version, new_version)
        {
            self.save_snapshot(id, &state, new_version, policy).await;
        }
        self.keep(id, state, new_version, forgets);
    }

    /// A failed snapshot only makes later loads slower, so it is logged, not returned.
    async fn save_snapshot(&self, id: &str, state: &A, version: u64, policy: &Snapshots<A>) {
        self.save_encoded_snapshot(id, version, (policy.encode)(state))
            .await;
    }

    /// [`Repository::save_snapshot`] of a state already encoded.
    async fn save_encoded_snapshot(
        &self,
        id: &str,
        version: u64,
        encoded: std::result::Result<Payload, serde_json::Error>,
    ) {
        let result = match encoded {
            Ok(payload) => {
                let mut snapshot = Snapshot::new(id, A::TYPE, version, A::STATE_VERSION, payload);
                snapshot.taken_at = self.clock.now();
                self.store.save_snapshot(snapshot).await
            }
            Err(cause) => Err(Error::Encode {
                event_type: "snapshot",
                cause,
            }),
        };
        if let Err(error) = result {
            tracing::warn!(stream_id = id, version, %error, "could not save a snapshot");
        }
    }
}

/// A command's events, ready to append: with ids derived from the command id when asked
/// (`execute_once`).
fn new_events<E: crate::event::EventSet>(
    events: &[E],
    context: &CommandContext,
    derived_ids: bool,
) -> Result<Vec<NewEvent>> {
    events
        .iter()
        .enumerate()
        .map(|(index, event)| {
            let new = NewEvent::from_event(event, context)?;
            Ok(if derived_ids {
                let mut new = new.event_id(context.event_id(index));
                new.once = true;
                new
            } else {
                new
            })
        })
        .collect()
}

/// An error several commands of one batch share: the original, behind its source chain (so
/// that [`Error::is_transient`] still classifies it).
#[derive(Debug)]
struct SharedError(Arc<Error>);

impl fmt::Display for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SharedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.0.as_ref())
    }
}
