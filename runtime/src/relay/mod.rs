//! Relays: the global feed published to a message broker, in feed order, each event once.
//!
//! A [`Relay`] follows the feed of a PostgreSQL store (optionally only some aggregates or event
//! types) and hands each batch to a [`Sink`], a broker client: NATS JetStream
//! (`JetStreamSink`, feature `nats`) or RabbitMQ (`RabbitMqSink`, feature `rabbitmq`). It runs
//! like a projection runner:
//!
//! - **A lease**: one relay of a name publishes at a time; others wait on standby and take over
//!   when it dies.
//! - **A checkpoint that follows the broker's acknowledgements**: it moves past an event only
//!   after the broker acknowledged it and every event before it, so a crash never loses one.
//! - **No visible duplicates after a crash, on JetStream**: every message carries the event id as
//!   its de-duplication id (`Nats-Msg-Id`), and the relay's name and feed position as headers. A
//!   relay that restarts asks the broker for the last message it published
//!   ([`Sink::last_published`]) and resumes after it, whatever the broker's de-duplication
//!   window; what it then publishes again (a batch in flight when it died, at most) falls in
//!   that window, where the broker drops it. RabbitMQ has neither: there, a restarted relay
//!   publishes again what it had not checkpointed (a batch at most; the event id is the
//!   `message_id`), and [consumers](crate::consumer) apply each event once.
//! - **Retries through outages**: a broker or database that goes away is waited for, with
//!   backoff; the batch is published again from its first unacknowledged event.
//! - **Dead letters**: an event the broker refuses for good (larger than it accepts, say) is
//!   recorded in `relay_dead_letters`, and so are the later events of its stream, which wait
//!   behind it so the stream's order holds on the broker; every other stream flows on.
//!
//! Kafka fits the same [`Sink`] trait (an idempotent producer, `enable.idempotence`, whose
//! delivery reports are the acknowledgements, and the event id as the record key's
//! de-duplication); no Kafka sink ships until it can be tested against a real broker.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::Instrument as _;

use crate::envelope::RecordedEvent;
use crate::failure::backoff;
use crate::feed::Subscription;
use crate::position::FeedPosition;
use crate::store::PostgresStore;
use crate::store::sql::{Backend as _, LeaseName};

mod checkpoint;
#[cfg(feature = "nats")]
mod jetstream;
mod message;
#[cfg(feature = "rabbitmq")]
mod rabbitmq;

pub use checkpoint::{RelayDeadLetter, RelayStatus, status};
#[cfg(feature = "nats")]
pub use jetstream::JetStreamSink;
pub use message::{InboundError, Outbound, headers, inbound, parse_feed_position, subject_token};
#[cfg(feature = "rabbitmq")]
pub use rabbitmq::RabbitMqSink;

/// Why a broker did not take a message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// It may take it later (it is unreachable, restarting, slow to acknowledge): the relay
    /// publishes the message again after a backoff.
    #[error("the broker did not acknowledge the message (retried): {0}")]
    Transient(String),
    /// It never will (the message is larger than it accepts, say): the relay records a dead
    /// letter and parks the event's stream.
    #[error("the broker refused the message for good: {0}")]
    Permanent(String),
}

/// A message broker a [`Relay`] publishes to.
pub trait Sink: Send + Sync + 'static {
    /// Why the broker would refuse `message` for good, if it would, before anything is sent.
    fn refuses(&self, message: &Outbound) -> Option<String>;

    /// Publishes `messages` in order and waits for the broker's acknowledgements: an outcome
    /// per message, in the same order; fewer outcomes than messages when sending stopped (the
    /// rest were not sent, and are published again). A message is acknowledged only when the
    /// broker stored it (or recognised it as a duplicate of one it stored).
    fn publish<'a>(
        &'a self,
        messages: &'a [Outbound],
    ) -> impl Future<Output = Vec<Result<(), SinkError>>> + Send + 'a;

    /// The feed position of the last message the broker holds from the relay `relay`, if it
    /// can tell: the relay resumes after it.
    ///
    /// # Errors
    /// [`SinkError::Transient`] when the broker cannot be asked now.
    fn last_published<'a>(
        &'a self,
        relay: &'a str,
    ) -> impl Future<Output = Result<Option<FeedPosition>, SinkError>> + Send + 'a;
}

/// What a relay is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RelayState {
    /// `run` has not begun.
    NotStarted,
    /// Another relay of the same name holds the lease; this one takes over when it goes.
    Standby,
    /// Publishing; every event up to `checkpoint` is acknowledged.
    Running {
        /// The relay's checkpoint.
        checkpoint: FeedPosition,
    },
    /// The broker or the database failed; the relay tries again after a backoff.
    Retrying {
        /// The failure.
        error: String,
        /// Consecutive failed attempts.
        attempt: u32,
    },
    /// `run` returned.
    Stopped,
}

/// Which events a relay publishes.
#[derive(Debug, Clone, Default)]
struct Filter {
    aggregate_types: Option<HashSet<String>>,
    event_types: Option<Vec<String>>,
}

/// Publishes a store's global feed to a [`Sink`]; see the [module documentation](self).
#[derive(Debug)]
pub struct Relay<K> {
    store: PostgresStore,
    sink: K,
    name: Arc<str>,
    filter: Filter,
    batch_size: usize,
    retry_backoff: Duration,
    standby_interval: Duration,
    state: watch::Sender<RelayState>,
}

impl<K: Sink> Relay<K> {
    /// A relay named `name` (its checkpoint, lease and dead letters are kept under the name)
    /// from `store` to `sink`, publishing every event.
    pub fn new(store: PostgresStore, name: impl Into<String>, sink: K) -> Self {
        Self {
            store,
            sink,
            name: Arc::from(name.into()),
            filter: Filter::default(),
            batch_size: 1000,
            retry_backoff: Duration::from_millis(100),
            standby_interval: Duration::from_secs(1),
            state: watch::Sender::new(RelayState::NotStarted),
        }
    }

    /// Only events of these aggregate types.
    #[must_use]
    pub fn aggregate_types<I: IntoIterator<Item = T>, T: Into<String>>(mut self, types: I) -> Self {
        self.filter.aggregate_types = Some(types.into_iter().map(Into::into).collect());
        self
    }

    /// Only events of these types (the store filters them).
    #[must_use]
    pub fn event_types<I: IntoIterator<Item = T>, T: Into<String>>(mut self, types: I) -> Self {
        self.filter.event_types = Some(types.into_iter().map(Into::into).collect());
        self
    }

    /// Events read and published per batch (1,000 by default): also the most a crash can make
    /// the relay publish again, inside the broker's de-duplication window.
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

    /// How often a relay on standby tries to take the lease (1 s by default).
    #[must_use]
    pub fn standby_interval(mut self, interval: Duration) -> Self {
        self.standby_interval = interval;
        self
    }

    /// What the relay is doing, now and as it changes.
    #[must_use]
    pub fn state(&self) -> watch::Receiver<RelayState> {
        self.state.subscribe()
    }

    /// Publishes until `shutdown` completes, through broker and database outages.
    ///
    /// # Errors
    /// [`crate::Error`] only for what no retry can cure: the store is not migrated (or its
    /// relay tables are missing), newer than this build, moved to another cluster or corrupt,
    /// or the relay's name is empty.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> crate::Result<()> {
        if self.name.is_empty() {
            return Err(crate::Error::InvalidConfig(
                "a relay needs a non-empty name: its checkpoint is kept under it".into(),
            ));
        }
        let span = tracing::info_span!("relay", relay = %self.name);
        self.run_until(shutdown).instrument(span).await
    }

    async fn run_until(self, shutdown: impl Future<Output = ()> + Send) -> crate::Result<()> {
        tokio::pin!(shutdown);
        let mut attempt = 0_u32;
        let outcome = loop {
            let work = self.lease_and_publish(&mut attempt);
            let result = tokio::select! {
                biased;
                () = &mut shutdown => break Ok(()),
                result = work => result,
            };
            match result {
                Ok(()) | Err(Failure::LeaseLost) => {
                    // On standby: the lease is another relay's.
                    self.state.send_replace(RelayState::Standby);
                    tokio::select! {
                        biased;
                        () = &mut shutdown => break Ok(()),
                        () = tokio::time::sleep(self.standby_interval) => {}
                    }
                }
                Err(Failure::Fatal(error)) => break Err(error),
                Err(failure) => {
                    attempt = attempt.saturating_add(1);
                    let error = failure.to_string();
                    tracing::warn!(relay = %self.name, %error, attempt, "relay retrying");
                    self.state
                        .send_replace(RelayState::Retrying { error, attempt });
                    tokio::select! {
                        biased;
                        () = &mut shutdown => break Ok(()),
                        () = tokio::time::sleep(backoff(self.retry_backoff, attempt)) => {}
                    }
                }
            }
        };
        self.state.send_replace(RelayState::Stopped);
        outcome
    }

    /// Takes the lease and publishes while it holds it; `Ok` when the lease is another's.
    async fn lease_and_publish(&self, attempt: &mut u32) -> Result<(), Failure> {
        let lease = self
            .store
            .try_lease(LeaseName::Relay { name: &self.name })
            .await
            .map_err(Failure::store)?;
        let Some(lease) = lease else {
            return Ok(());
        };
        let outcome = async {
            let claimed = checkpoint::claim(&self.store, &self.name).await?;
            let mut position = claimed.position;
            // The broker may hold what the last holder published and could not checkpoint.
            if let Some(published) = self
                .sink
                .last_published(&self.name)
                .await
                .map_err(Failure::Sink)?
                && published > position
            {
                tracing::info!(relay = %self.name, ?published, "resuming after the broker's last message");
                checkpoint::save(&self.store, &claimed, published, 0, Vec::new()).await?;
                position = published;
            }
            let mut parked = checkpoint::parked_streams(&self.store, &self.name).await?;
            let mut feed = Subscription::new(self.store.clone(), position)
                .batch_size(self.batch_size);
            if let Some(types) = &self.filter.event_types {
                feed = feed.event_types(types.iter().cloned());
            }
            self.state
                .send_replace(RelayState::Running { checkpoint: position });
            let mut feed = ReadAhead::start(feed);
            loop {
                // A lease lost meanwhile shows when the checkpoint is saved (its token);
                // what was published in between is a duplicate the broker drops.
                let batch = feed.next().await.map_err(Failure::store)?;
                let Some(last) = batch.last().map(RecordedEvent::feed_position) else {
                    continue;
                };
                let (published, letters) = self.publish(batch, &mut parked, attempt).await?;
                checkpoint::save(&self.store, &claimed, last, published, letters).await?;
                *attempt = 0;
                self.state
                    .send_replace(RelayState::Running { checkpoint: last });
            }
        }
        .await;
        lease.release().await;
        outcome
    }

    /// Publishes a batch until the broker acknowledged every event of it that it accepts;
    /// returns how many it acknowledged, and the dead letters for the others (and for events
    /// behind them in their streams).
    async fn publish(
        &self,
        batch: Vec<RecordedEvent>,
        parked: &mut HashSet<String>,
        attempt: &mut u32,
    ) -> Result<(u64, Vec<RelayDeadLetter>), Failure> {
        let mut letters = Vec::new();
        let mut outbound = Vec::with_capacity(batch.len());
        for event in batch {
            if let Some(types) = &self.filter.aggregate_types
                && !types.contains(&event.aggregate_type)
            {
                continue;
            }
            if parked.contains(&event.stream_id) {
                letters.push(RelayDeadLetter::behind(&event));
                continue;
            }
            let message = Outbound::new(event, self.name.clone());
            match self.sink.refuses(&message) {
                Some(refusal) => self.park(&message, refusal, parked, &mut letters),
                None => outbound.push(message),
            }
        }
        let mut acknowledged = 0;
        let mut pending = &outbound[..];
        while !pending.is_empty() {
            let outcomes = self.sink.publish(pending).await;
            // The answered prefix: acknowledged, or refused for good (at the broker: the
            // stream's later messages of this batch may be stored already, a hole in its
            // order there that the dead letter records). Then the first failure, if any.
            let mut answered = 0;
            let mut failed = None;
            for (message, outcome) in pending.iter().zip(outcomes) {
                match outcome {
                    Ok(()) => acknowledged += 1,
                    Err(SinkError::Permanent(refusal)) => {
                        self.park(message, refusal, parked, &mut letters);
                    }
                    Err(error) => {
                        failed = Some(error);
                        break;
                    }
                }
                answered += 1;
            }
            pending = &pending[answered..];
            if failed.is_none() && !pending.is_empty() {
                failed = Some(SinkError::Transient("sending stopped".into()));
            }
            if let Some(error) = failed {
                *attempt = attempt.saturating_add(1);
                let error = error.to_string();
                tracing::warn!(relay = %self.name, %error, attempt = *attempt, "relay publishing again");
                self.state.send_replace(RelayState::Retrying {
                    error,
                    attempt: *attempt,
                });
                tokio::time::sleep(backoff(self.retry_backoff, *attempt)).await;
            }
        }
        Ok((acknowledged, letters))
    }

    /// Records `message` as refused for good, and parks its stream behind it.
    fn park(
        &self,
        message: &Outbound,
        refusal: String,
        parked: &mut HashSet<String>,
        letters: &mut Vec<RelayDeadLetter>,
    ) {
        let event = &message.event;
        tracing::error!(relay = %self.name, stream_id = %event.stream_id,
            stream_version = event.stream_version, %refusal, "the broker refuses an event: parked");
        parked.insert(event.stream_id.clone());
        letters.push(RelayDeadLetter::refused(message, refusal));
    }
}

/// The feed read one batch ahead, in a task of its own, while the relay publishes and
/// checkpoints the batch before: the database and the broker work at the same time. The task
/// ends with the relay's holding of the lease (dropped: aborted).
struct ReadAhead {
    batches: tokio::sync::mpsc::Receiver<crate::Result<Vec<RecordedEvent>>>,
    reader: tokio::task::JoinHandle<()>,
}

impl ReadAhead {
    fn start(mut feed: Subscription<PostgresStore>) -> Self {
        let (sender, batches) = tokio::sync::mpsc::channel(1);
        let reader = tokio::spawn(async move {
            loop {
                let batch = feed.next_batch().await;
                let failed = batch.is_err();
                if sender.send(batch).await.is_err() || failed {
                    return;
                }
            }
        });
        Self { batches, reader }
    }

    async fn next(&mut self) -> crate::Result<Vec<RecordedEvent>> {
        match self.batches.recv().await {
            Some(batch) => batch,
            // The reader is gone without a word: it panicked.
            None => Err(crate::Error::Backend(
                "the relay's feed reader stopped".into(),
            )),
        }
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Why one holding of the lease ended.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// The database failed (retried).
    #[error("the database failed: {0}")]
    Store(crate::Error),
    /// The broker failed (retried).
    #[error(transparent)]
    Sink(SinkError),
    /// Another relay took the lease over (this one goes on standby).
    #[error("the relay's lease was taken over")]
    LeaseLost,
    /// No retry cures it.
    #[error(transparent)]
    Fatal(crate::Error),
}

impl Failure {
    /// A store error: retried when it may pass, as projection runners do; else fatal (the
    /// store is not migrated, newer than this build, or moved to another cluster).
    fn store(error: crate::Error) -> Self {
        if error.is_transient() {
            Self::Store(error)
        } else {
            Self::Fatal(error)
        }
    }
}
