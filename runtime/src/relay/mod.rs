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
//!   behind it so the stream's order holds on the broker; every other stream flows on. Once
//!   the broker takes it (its limit raised), `retry` has the relay publish the stream's dead
//!   letters in order and the stream flows again; `skip` drops the refused event and publishes
//!   the rest (`factum relay retry|skip`).
//! - **Personal data stays sealed**: the `#[pii]` fields of events are published as stored,
//!   encrypted under their subject's data key ([`PersonalData`]).
//!
//! Kafka fits the same [`Sink`] trait (an idempotent producer, `enable.idempotence`, whose
//! delivery reports are the acknowledgements, and the event id as the record key's
//! de-duplication); no Kafka sink ships until it can be tested against a real broker.

use std::future::Future;

use crate::position::FeedPosition;

#[cfg(feature = "postgres")]
mod checkpoint;
#[cfg(feature = "nats")]
mod jetstream;
mod message;
#[cfg(feature = "rabbitmq")]
mod rabbitmq;
#[cfg(feature = "postgres")]
mod runner;

#[cfg(feature = "postgres")]
pub use checkpoint::{RelayDeadLetter, RelayStatus, retry, skip, status};
#[cfg(feature = "nats")]
pub use jetstream::JetStreamSink;
pub use message::{InboundError, Outbound, headers, inbound, parse_feed_position, subject_token};
#[cfg(feature = "rabbitmq")]
pub use rabbitmq::RabbitMqSink;
#[cfg(feature = "postgres")]
pub use runner::Relay;

/// What a relay publishes of the personal data (`#[pii]` fields, see [`crate::pii`]) of the
/// events it relays.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum PersonalData {
    /// Sealed, as stored (the default): the broker keeps no plaintext of it, and forgetting a
    /// subject erases its data from the broker's copies too (they need the deleted key).
    /// [Consumers](crate::consumer) open it with the data keys
    /// ([`Consumer::data_keys`](crate::consumer::Consumer::data_keys)), or read it as erased.
    #[default]
    Sealed,
    /// Opened by the store's key provider: consumers read it without the keys, and the broker
    /// keeps the plaintext for its retention, out of `forget`'s reach. For brokers whose
    /// retention is part of the erasure plan (short, or purged by subject).
    Opened,
}

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

/// A message broker a `Relay` publishes to.
pub trait Sink: Send + Sync + 'static {
    /// A message ready to send: built from an [`Outbound`] ahead of publishing (the relay
    /// prepares the next batch while the broker acknowledges the one before).
    type Message: Send + Sync + 'static;

    /// The message for `message`, or why the broker would refuse it for good (it is larger
    /// than the broker takes, say), before anything is sent.
    ///
    /// # Errors
    /// The refusal: the relay records a dead letter and parks the event's stream.
    fn prepare(&self, message: &Outbound) -> Result<Self::Message, String>;

    /// Publishes `messages` in order and waits for the broker's acknowledgements: an outcome
    /// per message, in the same order; fewer outcomes than messages when sending stopped (the
    /// rest were not sent: the relay prepares and publishes them again). A message is
    /// acknowledged only when the broker stored it (or recognised it as a duplicate of one it
    /// stored).
    fn publish(
        &self,
        messages: Vec<Self::Message>,
    ) -> impl Future<Output = Vec<Result<(), SinkError>>> + Send + '_;

    /// Reads again what the sink learnt of the broker when it was made (its limits), before
    /// the relay publishes parked streams again: an operator may have raised them. By default
    /// nothing.
    ///
    /// # Errors
    /// [`SinkError::Transient`] when the broker cannot be asked now.
    fn refresh(&self) -> impl Future<Output = Result<(), SinkError>> + Send + '_ {
        std::future::ready(Ok(()))
    }

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

/// Why one holding of a relay's lease ended (shared by the runner and its checkpoint).
#[cfg(feature = "postgres")]
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

#[cfg(feature = "postgres")]
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
