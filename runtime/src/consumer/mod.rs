//! Consumers: the events a [relay](crate::relay) published, applied in another service, each
//! once and each stream in order.
//!
//! A [`Consumer`] reads messages from a [`Source`] (a broker: `JetStreamSource`, feature
//! `nats`; `RabbitMqSource`, feature `rabbitmq`), reads each back into the stored event it carries ([`inbound`]: the envelope from the
//! headers, the payload from the body) and hands them, a batch at a time, to a [`Target`]: the
//! service's read model, or one of its `#[projection]`s ([`ProjectionTarget`]) or saga
//! projections, decoding and upcasting each event by the type and schema version in its headers.
//!
//! **Each event once.** A target records, in the same transaction as its writes, the newest
//! stream version it applied of each stream and the source position it has applied up to; it
//! skips an event whose stream version is not above its stream's. A message delivered again (the
//! broker redelivers after a crash, a relay publishes again after one) changes nothing. A
//! consumer that restarts resumes after the target's position.
//!
//! **Nothing skipped.** The consumer tells the broker a message is done only after the target
//! committed it. A failure the target may get over (its database or the broker unreachable)
//! is retried with backoff; a message that is no relayed event, or an event the service cannot
//! decode (a schema version newer than it knows), stops the consumer with an error naming it:
//! nothing after it is applied until the service is fixed (deploy the upcaster, say), so no
//! stream's order breaks and no event is passed over.
//!
//! **Personal data.** Relays publish the `#[pii]` fields of events sealed, as stored (see
//! [`crate::relay::PersonalData`]). A consumer given the data keys' store
//! ([`Consumer::data_keys`]: the producer's store, or one on its database, with the same key
//! provider) opens them; without it, they read as their replacements, the envelopes marked
//! [`shredded`](crate::envelope::Envelope::shredded), as in a copy without the keys. Once the
//! producer forgets a subject, a consumer replaying the broker's messages reads its data as
//! erased: the broker's copies hold no plaintext.
//!
//! [`inbound`]: crate::relay::inbound

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::Instrument as _;

use crate::envelope::RecordedEvent;
use crate::failure::backoff;

#[cfg(feature = "nats")]
mod jetstream;
mod projection;
#[cfg(feature = "rabbitmq")]
mod rabbitmq;

#[cfg(feature = "nats")]
pub use jetstream::JetStreamSource;
pub use projection::ProjectionTarget;
#[cfg(feature = "rabbitmq")]
pub use rabbitmq::RabbitMqSource;

/// A message read back into the event it carries.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Delivery {
    /// The event.
    pub event: RecordedEvent,
    /// What the source settles the message by.
    pub receipt: Receipt,
}

/// Where a delivered message stands in its source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Receipt {
    /// Its position, when the source orders its messages by a position it can resume after
    /// (JetStream: the stream sequence).
    pub position: Option<u64>,
    /// The source's handle to settle it and those before it by (a RabbitMQ delivery tag).
    pub tag: u64,
}

impl Receipt {
    /// A receipt at `position` with the handle `tag`.
    #[must_use]
    pub fn new(position: Option<u64>, tag: u64) -> Self {
        Self { position, tag }
    }
}

/// Why a source could not deliver.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The broker is unreachable or failed; the consumer reads again after a backoff.
    #[error("the broker failed (retried): {0}")]
    Transient(String),
    /// The source cannot work as configured (its stream does not exist, say).
    #[error("{0}")]
    Invalid(String),
    /// A message is not a relayed event: the consumer stops before it.
    #[error("message {at} is not a relayed event: {cause}")]
    Undecodable {
        /// Where it is (subject and sequence, queue and delivery tag).
        at: String,
        /// What does not read.
        #[source]
        cause: crate::relay::InboundError,
    },
}

/// A broker a [`Consumer`] reads relayed events from.
pub trait Source: Send + 'static {
    /// Starts (or restarts) reading after `position`, the last position the target applied
    /// (`None`: from the start), for sources that order their messages by position; others
    /// redeliver what was not settled.
    fn resume(
        &mut self,
        position: Option<u64>,
    ) -> impl Future<Output = Result<(), SourceError>> + Send + '_;

    /// The next messages in the broker's order, at most `max`: waits for at least one, at most
    /// `wait` (then returns none).
    fn next(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> impl Future<Output = Result<Vec<Delivery>, SourceError>> + Send + '_;

    /// Tells the broker that the delivery of `last` and every one before it are applied (or
    /// were before): it need not deliver them again.
    fn settle(
        &mut self,
        last: Receipt,
    ) -> impl Future<Output = Result<(), SourceError>> + Send + '_;
}

/// Where a consumer finds the data keys that open relayed personal data: a store holding them
/// (the producer's, or one on its database) with the key provider that wraps them.
pub trait DataKeys: std::fmt::Debug + Send + Sync + 'static {
    /// Opens the sealed personal data of `events` (see the stores' `open_personal_data`).
    ///
    /// # Errors
    /// As the store's `open_personal_data`.
    fn open<'a>(
        &'a self,
        events: &'a mut [RecordedEvent],
    ) -> Pin<Box<dyn Future<Output = crate::Result<()>> + Send + 'a>>;
}

impl DataKeys for crate::store::MemoryStore {
    fn open<'a>(
        &'a self,
        events: &'a mut [RecordedEvent],
    ) -> Pin<Box<dyn Future<Output = crate::Result<()>> + Send + 'a>> {
        Box::pin(self.open_personal_data(events))
    }
}

#[cfg(feature = "postgres")]
impl DataKeys for crate::store::PostgresStore {
    fn open<'a>(
        &'a self,
        events: &'a mut [RecordedEvent],
    ) -> Pin<Box<dyn Future<Output = crate::Result<()>> + Send + 'a>> {
        Box::pin(self.open_personal_data(events))
    }
}

#[cfg(feature = "sqlite")]
impl DataKeys for crate::store::SqliteStore {
    fn open<'a>(
        &'a self,
        events: &'a mut [RecordedEvent],
    ) -> Pin<Box<dyn Future<Output = crate::Result<()>> + Send + 'a>> {
        Box::pin(self.open_personal_data(events))
    }
}

/// Why a target did not apply a batch.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// It may later (its database is unreachable, a deadlock): the batch is applied again
    /// after a backoff.
    #[error("the target failed (retried): {0}")]
    Transient(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// It never will as the service stands (the event does not decode, the handler refuses
    /// it): the consumer stops before the event.
    #[error("event {stream_id}@{stream_version} ({event_type}) cannot be applied: {cause}")]
    Rejected {
        /// The event's stream.
        stream_id: String,
        /// Its version.
        stream_version: u64,
        /// Its type.
        event_type: String,
        /// Why.
        #[source]
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    /// It cannot work as configured (its tables are missing, say): the consumer stops.
    #[error("the target cannot work: {0}")]
    Invalid(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl TargetError {
    /// `cause` as a transient failure when it is one (by its error chain, as runners decide:
    /// an outage, a deadlock, a [`Transient`](crate::Transient) mark), else as the rejection of
    /// `event`.
    #[must_use]
    pub fn of(
        event: &RecordedEvent,
        cause: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        let cause = cause.into();
        if crate::failure::classify(cause.as_ref()).retryable() {
            Self::Transient(cause)
        } else {
            Self::Rejected {
                stream_id: event.stream_id.clone(),
                stream_version: event.stream_version,
                event_type: event.event_type.clone(),
                cause,
            }
        }
    }
}

/// Where a service applies relayed events: its read model, with the once-only bookkeeping
/// committed with its writes.
pub trait Target: Send + 'static {
    /// The source position everything up to which is applied (`None`: none yet).
    ///
    /// # Errors
    /// [`TargetError::Transient`] when it cannot be read now.
    fn position(&mut self) -> impl Future<Output = Result<Option<u64>, TargetError>> + Send + '_;

    /// Applies `events` in order, atomically: each whose stream version is above the newest
    /// one applied of its stream (the others were applied before: skipped), recording those
    /// versions and `position` (the last event's source position, when the source has them)
    /// with the writes. Returns how many it applied.
    ///
    /// # Errors
    /// [`TargetError`]; nothing of the batch is applied.
    fn apply<'a>(
        &'a mut self,
        events: &'a [RecordedEvent],
        position: Option<u64>,
    ) -> impl Future<Output = Result<u64, TargetError>> + Send + 'a;
}

/// What a consumer is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConsumerState {
    /// `run` has not begun.
    NotStarted,
    /// Applying messages.
    Running {
        /// The target's source position, when the source has positions.
        position: Option<u64>,
        /// Events applied since `run` began (redeliveries skipped are not counted).
        applied: u64,
        /// Messages skipped as applied before.
        skipped: u64,
    },
    /// The broker or the target failed; the consumer tries again after a backoff.
    Retrying {
        /// The failure.
        error: String,
        /// Consecutive failed attempts.
        attempt: u32,
    },
    /// `run` returned.
    Stopped,
}

/// Why a consumer stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumerError {
    /// The consumer's name is empty.
    #[error("a consumer needs a non-empty name: its bookkeeping is kept under it")]
    EmptyName,
    /// The source cannot work as configured, or a message is no relayed event.
    #[error(transparent)]
    Source(SourceError),
    /// The target rejected an event.
    #[error(transparent)]
    Target(TargetError),
    /// Relayed personal data could not be opened (sealed data that does not decrypt under its
    /// key: altered, or the data keys' store has another key-encryption key).
    #[error("relayed personal data cannot be opened: {0}")]
    PersonalData(#[source] crate::Error),
}

/// Applies what a [`Source`] delivers to a [`Target`]; see the [module documentation](self).
#[derive(Debug)]
pub struct Consumer<S, T> {
    source: S,
    target: T,
    name: Arc<str>,
    batch_size: usize,
    wait: Duration,
    retry_backoff: Duration,
    state: watch::Sender<ConsumerState>,
    keys: Option<Arc<dyn DataKeys>>,
}

impl<S: Source, T: Target> Consumer<S, T> {
    /// A consumer named `name` (for its logs and state) applying what `source` delivers to
    /// `target`.
    pub fn new(name: impl Into<String>, source: S, target: T) -> Self {
        Self {
            source,
            target,
            name: Arc::from(name.into()),
            batch_size: 256,
            wait: Duration::from_secs(1),
            retry_backoff: Duration::from_millis(100),
            state: watch::Sender::new(ConsumerState::NotStarted),
            keys: None,
        }
    }

    /// Opens relayed personal data with the data keys of `keys` (the producer's store, or one
    /// on its database, with the same key provider); without it, personal data reads as erased
    /// (see the [module documentation](self)).
    #[must_use]
    pub fn data_keys(mut self, keys: impl DataKeys) -> Self {
        self.keys = Some(Arc::new(keys));
        self
    }

    /// Messages applied per batch, at most (256 by default): one target transaction each.
    #[must_use]
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// The first retry's delay after a failure (100 ms by default), doubled per attempt up to
    /// a cap, with jitter.
    #[must_use]
    pub fn retry_backoff(mut self, delay: Duration) -> Self {
        self.retry_backoff = delay;
        self
    }

    /// What the consumer is doing, now and as it changes.
    #[must_use]
    pub fn state(&self) -> watch::Receiver<ConsumerState> {
        self.state.subscribe()
    }

    /// Applies messages until `shutdown` completes, through broker and target outages.
    ///
    /// # Errors
    /// [`ConsumerError`] for what no retry cures: a message that is no relayed event, an event
    /// the target rejects (both named; nothing after them is applied), a source that cannot
    /// work as configured, an empty name.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ConsumerError> {
        if self.name.is_empty() {
            return Err(ConsumerError::EmptyName);
        }
        let span = tracing::info_span!("consumer", consumer = %self.name);
        let outcome = async {
            tokio::pin!(shutdown);
            let mut attempt = 0_u32;
            let mut totals = (0_u64, 0_u64);
            loop {
                let result = tokio::select! {
                    biased;
                    () = &mut shutdown => return Ok(()),
                    result = self.consume(&mut attempt, &mut totals) => result,
                };
                let error = match result {
                    Ok(never) => match never {},
                    Err(Failure::Fatal(error)) => return Err(error),
                    Err(Failure::Retry(error)) => error,
                };
                attempt = attempt.saturating_add(1);
                tracing::warn!(consumer = %self.name, %error, attempt, "consumer retrying");
                self.state
                    .send_replace(ConsumerState::Retrying { error, attempt });
                tokio::select! {
                    biased;
                    () = &mut shutdown => return Ok(()),
                    () = tokio::time::sleep(backoff(self.retry_backoff, attempt)) => {}
                }
            }
        }
        .instrument(span)
        .await;
        self.state.send_replace(ConsumerState::Stopped);
        outcome
    }

    /// Resumes after the target's position and applies batches until something fails.
    async fn consume(
        &mut self,
        attempt: &mut u32,
        totals: &mut (u64, u64),
    ) -> Result<std::convert::Infallible, Failure> {
        let mut position = self.target.position().await.map_err(Failure::target)?;
        self.source
            .resume(position)
            .await
            .map_err(Failure::source)?;
        self.state.send_replace(ConsumerState::Running {
            position,
            applied: totals.0,
            skipped: totals.1,
        });
        loop {
            let deliveries = self
                .source
                .next(self.batch_size, self.wait)
                .await
                .map_err(Failure::source)?;
            let Some(last) = deliveries.last().map(|d| d.receipt) else {
                continue;
            };
            let batch_position = last.position.or(position);
            let mut events: Vec<RecordedEvent> = deliveries.into_iter().map(|d| d.event).collect();
            open_personal_data(self.keys.as_deref(), &mut events).await?;
            let applied = self
                .target
                .apply(&events, batch_position)
                .await
                .map_err(Failure::target)?;
            // Settling spares the broker redeliveries: what is applied is never applied again.
            self.source.settle(last).await.map_err(Failure::source)?;
            position = batch_position;
            totals.0 += applied;
            totals.1 += events.len() as u64 - applied;
            *attempt = 0;
            self.state.send_replace(ConsumerState::Running {
                position,
                applied: totals.0,
                skipped: totals.1,
            });
        }
    }
}

/// Opens the sealed personal data of `events`: with the data keys, or as erased.
async fn open_personal_data(
    keys: Option<&dyn DataKeys>,
    events: &mut [RecordedEvent],
) -> Result<(), Failure> {
    let opened = match keys {
        Some(keys) => keys.open(events).await,
        None => open_as_erased(events),
    };
    opened.map_err(|error| {
        if crate::failure::classify(&error).retryable() {
            Failure::Retry(error.to_string())
        } else {
            Failure::Fatal(ConsumerError::PersonalData(error))
        }
    })
}

/// Opens the sealed fields of `events` as a reader without their keys sees them: their
/// replacements, the envelopes marked [`shredded`](crate::envelope::Envelope::shredded) and
/// naming their data key. Events with nothing sealed are left as they are.
fn open_as_erased(events: &mut [RecordedEvent]) -> crate::Result<()> {
    use crate::store::keys::{Opened, sealed};
    for event in events {
        let opened = match sealed(event.event.as_str())? {
            Some((sealed, key_id)) => Opened::new(&sealed, key_id, None)?,
            None => continue,
        };
        opened.apply(event);
    }
    Ok(())
}

/// Why one round of consuming ended.
enum Failure {
    Retry(String),
    Fatal(ConsumerError),
}

impl Failure {
    fn source(error: SourceError) -> Self {
        match error {
            SourceError::Transient(reason) => Self::Retry(reason),
            other => Self::Fatal(ConsumerError::Source(other)),
        }
    }

    fn target(error: TargetError) -> Self {
        match error {
            TargetError::Transient(cause) => Self::Retry(cause.to_string()),
            other => Self::Fatal(ConsumerError::Target(other)),
        }
    }
}
