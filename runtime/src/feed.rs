//! Live subscriptions to the global feed: catch up from a checkpoint, then follow new events.
//!
//! A store signals that the feed may have grown ([`FeedWakeups`]): PostgreSQL through
//! `LISTEN`/`NOTIFY`, the in-memory store directly. Signals are hints only; a subscription also
//! polls at a fixed interval, so a lost signal delays delivery, it never loses an event.

use std::collections::VecDeque;
use std::time::Duration;

use crate::envelope::RecordedEvent;
use crate::error::Result;
use crate::store::{EventStore, FeedPosition, FeedQuery};
pub use crate::store::{FeedNotifier, FeedWakeups};

/// What one read of the feed found.
struct ReadOutcome {
    found: bool,
    held_back: bool,
}

/// Follows the global feed from a position: first everything already stored, then new events as
/// they are committed, in feed order, each exactly once.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// use factum::feed::Subscription;
/// use factum::{EventStore, ExpectedVersion, FeedPosition, MemoryStore, NewEvent, Payload};
///
/// let store = MemoryStore::new();
/// let mut feed = Subscription::new(store.clone(), FeedPosition::START);
/// let ping = NewEvent::new("Pinged", 1, Payload::encode(&1)?);
/// store.append("ping-1", "Pinger", ExpectedVersion::Any, vec![ping]).await?;
/// let event = feed.next().await?;
/// assert_eq!(event.stream_id, "ping-1");
/// assert!(feed.position() >= event.feed_position());
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
pub struct Subscription<S> {
    store: S,
    query: FeedQuery,
    buffer: VecDeque<RecordedEvent>,
    /// Position after the last event handed out.
    delivered: FeedPosition,
    wakeups: FeedWakeups,
    poll_interval: Duration,
}

impl<S: EventStore> Subscription<S> {
    /// Default interval of the polling fallback.
    pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(500);

    /// A subscription delivering the events after `from`.
    pub fn new(store: S, from: FeedPosition) -> Self {
        let wakeups = store.wakeups();
        Self {
            store,
            query: FeedQuery::after(from),
            buffer: VecDeque::new(),
            delivered: from,
            wakeups,
            poll_interval: Self::DEFAULT_POLL_INTERVAL,
        }
    }

    /// Only these event types (the filter runs in the store).
    #[must_use]
    pub fn event_types<I, T>(mut self, types: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.query = self.query.event_types(types);
        self
    }

    /// How many events to read per round trip.
    #[must_use]
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.query = self.query.limit(batch_size.max(1));
        self
    }

    /// How often to look for new events when no hint arrives.
    #[must_use]
    pub fn poll_interval(mut self, poll_interval: Duration) -> Self {
        self.poll_interval = poll_interval;
        self
    }

    /// The position to checkpoint once every event handed out so far is processed. It may be
    /// past the last event handed out, when the store skipped events the filter excludes.
    pub fn position(&self) -> FeedPosition {
        if self.buffer.is_empty() {
            self.query.after
        } else {
            self.delivered
        }
    }

    /// The next event, waiting for one if the subscription is caught up, and through
    /// failures that may pass ([`Error::is_transient`](crate::Error::is_transient): the
    /// database restarting, a dropped connection), retried with backoff.
    ///
    /// # Errors
    /// A permanent store error; the subscription can be polled again (it resumes where it
    /// was).
    pub async fn next(&mut self) -> Result<RecordedEvent> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                self.delivered = event.feed_position();
                return Ok(event);
            }
            self.fill().await?;
        }
    }

    /// The next batch of events (at least one), waiting if the subscription is caught up, and
    /// through failures that may pass (as [`Subscription::next`]).
    ///
    /// # Errors
    /// A permanent store error; the subscription can be polled again.
    pub async fn next_batch(&mut self) -> Result<Vec<RecordedEvent>> {
        if self.buffer.is_empty() {
            self.fill().await?;
        }
        let batch: Vec<_> = self.buffer.drain(..).collect();
        if let Some(last) = batch.last() {
            self.delivered = last.feed_position();
        }
        Ok(batch)
    }

    /// Reads what is already stored after the current position, without waiting: an empty
    /// result means caught up.
    ///
    /// # Errors
    /// A store error.
    pub async fn try_next_batch(&mut self) -> Result<Vec<RecordedEvent>> {
        if self.buffer.is_empty() {
            let _ = self.read_once().await?;
        }
        let batch: Vec<_> = self.buffer.drain(..).collect();
        if let Some(last) = batch.last() {
            self.delivered = last.feed_position();
        }
        Ok(batch)
    }

    /// Reads into the buffer, waiting for a hint or the poll interval while nothing is new,
    /// and through failures that may pass (the database restarting, a dropped connection),
    /// backing off up to 2 s.
    async fn fill(&mut self) -> Result<()> {
        let mut held_back_wait = Self::HELD_BACK_RETRY;
        let mut failures = 0;
        loop {
            // Hints from here on are not yet seen, so an append committed during the read
            // below wakes the wait that follows it.
            self.wakeups.mark_seen();
            let read = match self.read_once().await {
                Ok(read) => read,
                Err(error) if error.is_transient() => {
                    failures += 1;
                    tracing::warn!(
                        %error,
                        attempts = failures,
                        "the feed could not be read; retrying"
                    );
                    tokio::time::sleep(crate::failure::backoff(Self::RETRY_BACKOFF, failures))
                        .await;
                    continue;
                }
                Err(error) => return Err(error),
            };
            failures = 0;
            if read.found {
                return Ok(());
            }
            // Events held back by an open transaction need no hint to become visible (the
            // transaction may be someone else's): look again soon, backing off to the poll
            // interval.
            let wait = if read.held_back {
                let wait = held_back_wait.min(self.poll_interval);
                held_back_wait = held_back_wait.saturating_mul(2);
                wait
            } else {
                held_back_wait = Self::HELD_BACK_RETRY;
                self.poll_interval
            };
            tokio::select! {
                () = self.wakeups.changed() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// First wait before reading again when events are held back.
    const HELD_BACK_RETRY: Duration = Duration::from_millis(2);

    /// First wait before reading again after a failure that may pass (doubling, at most 2 s).
    const RETRY_BACKOFF: Duration = Duration::from_millis(100);

    /// One read.
    async fn read_once(&mut self) -> Result<ReadOutcome> {
        let batch = self.store.read_feed(&self.query).await?;
        self.query.after = batch.next.max(self.query.after);
        let outcome = ReadOutcome {
            found: !batch.events.is_empty(),
            held_back: batch.held_back,
        };
        self.buffer.extend(batch.events);
        Ok(outcome)
    }
}
