//! [`Relay`]: the lease, the feed read one batch ahead, publishing, acknowledgements, the
//! checkpoint, retries and dead letters (see the [module documentation](super)).

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::Instrument as _;

use super::checkpoint::{self, RelayDeadLetter};
use super::message::Outbound;
use super::{Failure, PersonalData, RelayState, Sink, SinkError};
use crate::envelope::RecordedEvent;
use crate::failure::backoff;
use crate::feed::Subscription;
use crate::position::FeedPosition;
use crate::store::PostgresStore;
use crate::store::sql::{Backend as _, LeaseName};

/// Which events a relay publishes.
#[derive(Debug, Clone, Default)]
struct Filter {
    aggregate_types: Option<HashSet<String>>,
    event_types: Option<Vec<String>>,
}

/// Publishes a store's global feed to a [`Sink`]; see the [module documentation](super).
#[derive(Debug)]
pub struct Relay<K> {
    store: PostgresStore,
    sink: Arc<K>,
    name: Arc<str>,
    filter: Filter,
    batch_size: usize,
    retry_backoff: Duration,
    standby_interval: Duration,
    state: watch::Sender<RelayState>,
    personal_data: PersonalData,
}

impl<K: Sink> Relay<K> {
    /// A relay named `name` (its checkpoint, lease and dead letters are kept under the name)
    /// from `store` to `sink`, publishing every event.
    pub fn new(store: PostgresStore, name: impl Into<String>, sink: K) -> Self {
        Self {
            store,
            sink: Arc::new(sink),
            name: Arc::from(name.into()),
            filter: Filter::default(),
            batch_size: 1000,
            retry_backoff: Duration::from_millis(100),
            standby_interval: Duration::from_secs(1),
            state: watch::Sender::new(RelayState::NotStarted),
            personal_data: PersonalData::Sealed,
        }
    }

    /// What it publishes of the events' personal data (`#[pii]` fields): sealed, as stored,
    /// by default (see [`PersonalData`]).
    #[must_use]
    pub fn personal_data(mut self, personal_data: PersonalData) -> Self {
        self.personal_data = personal_data;
        self
    }

    /// The store the relay reads the events it publishes through: their personal data sealed,
    /// as stored, or opened by the store's key provider.
    fn reader(&self) -> PostgresStore {
        match self.personal_data {
            PersonalData::Sealed => self.store.clone().without_key_provider(),
            PersonalData::Opened => self.store.clone(),
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

    /// Publishes the relay's state, and records it as metrics.
    fn set_state(&self, state: RelayState) {
        crate::metrics::runner_state(
            "relay",
            &self.name,
            matches!(state, RelayState::Running { .. }),
            matches!(state, RelayState::Retrying { .. }),
        );
        self.state.send_replace(state);
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
                    self.set_state(RelayState::Standby);
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
                    self.set_state(RelayState::Retrying { error, attempt });
                    tokio::select! {
                        biased;
                        () = &mut shutdown => break Ok(()),
                        () = tokio::time::sleep(backoff(self.retry_backoff, attempt)) => {}
                    }
                }
            }
        };
        self.set_state(RelayState::Stopped);
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
            let mut feed = Subscription::new(self.reader(), position)
                .batch_size(self.batch_size);
            if let Some(types) = &self.filter.event_types {
                feed = feed.event_types(types.iter().cloned());
            }
            self.set_state(RelayState::Running { checkpoint: position });
            let mut feed = ReadAhead::start(feed, self.preparer());
            let mut next_retry_check = tokio::time::Instant::now() + RETRY_CHECK_INTERVAL;
            let mut next_status = tokio::time::Instant::now();
            // Whether the last batch read the feed's end (counting what is behind costs a scan
            // of it: rarer while a backlog is worked off).
            let mut caught_up = true;
            loop {
                // A lease lost meanwhile shows when the checkpoint is saved (its token);
                // what was published in between is a duplicate the broker drops.
                let batch = tokio::select! {
                    batch = feed.next() => batch.map_err(Failure::store)?,
                    () = tokio::time::sleep_until(next_retry_check) => {
                        self.retry_parked(&claimed, &mut parked, attempt).await?;
                        next_retry_check = tokio::time::Instant::now() + RETRY_CHECK_INTERVAL;
                        if tokio::time::Instant::now() >= next_status {
                            self.record_status().await;
                            next_status = tokio::time::Instant::now()
                                + if caught_up { STATUS_INTERVAL } else { BACKLOG_STATUS_INTERVAL };
                        }
                        continue;
                    }
                };
                let Some(last) = batch.last else {
                    continue;
                };
                let (started, events) = (std::time::Instant::now(), batch.messages.len());
                caught_up = events < self.batch_size;
                let (published, letters) =
                    self.publish(batch.messages, &mut parked, attempt).await?;
                let parks = !letters.is_empty();
                checkpoint::save(&self.store, &claimed, last, published, letters).await?;
                if parks {
                    self.record_status().await;
                }
                crate::metrics::relay_batch(&self.name, events, last.position, started.elapsed());
                *attempt = 0;
                self.set_state(RelayState::Running { checkpoint: last });
            }
        }
        .await;
        lease.release().await;
        outcome
    }

    /// Publishes the parked streams an operator asked to retry (`relay::retry`, `relay::skip`):
    /// each stream's dead letters in stream order, read back from the store; the stream flows
    /// again unless an event is refused again. Re-reads which streams are parked first (a skip
    /// may have left a stream without dead letters).
    async fn retry_parked(
        &self,
        claimed: &checkpoint::Claimed,
        parked: &mut HashSet<String>,
        attempt: &mut u32,
    ) -> Result<(), Failure> {
        *parked = checkpoint::parked_streams(&self.store, &self.name).await?;
        let retries = checkpoint::retries(&self.store, &self.name).await?;
        if !retries.is_empty() {
            self.sink.refresh().await.map_err(Failure::Sink)?;
        }
        let preparer = self.preparer();
        for (stream, ids) in retries {
            let events = self
                .reader()
                .events_by_id(&ids)
                .await
                .map_err(Failure::store)?;
            tracing::info!(relay = %self.name, stream_id = %stream, events = events.len(),
                "publishing a parked stream again");
            parked.remove(&stream);
            let batch = preparer.prepare(events).messages;
            let (published, letters) = self.publish(batch, parked, attempt).await?;
            checkpoint::resolve(&self.store, claimed, &stream, published, letters).await?;
        }
        Ok(())
    }

    /// Reads the relay's status, which records its lag and dead letters as metrics; a failed
    /// read is left to the next (the relay's own reads report a database that went away).
    async fn record_status(&self) {
        if let Err(error) = checkpoint::status(&self.store, &self.name).await {
            tracing::debug!(relay = %self.name, %error, "the relay's status was not read");
        }
    }

    /// What the read-ahead task needs to prepare batches.
    fn preparer(&self) -> Preparer<K> {
        Preparer {
            sink: Arc::clone(&self.sink),
            relay: Arc::clone(&self.name),
            aggregate_types: self.filter.aggregate_types.clone(),
        }
    }

    /// Publishes a prepared batch until the broker acknowledged every event of it that it
    /// accepts; returns how many it acknowledged, and the dead letters for the others (and for
    /// events behind them in their streams).
    async fn publish(
        &self,
        batch: Vec<Prepared<K::Message>>,
        parked: &mut HashSet<String>,
        attempt: &mut u32,
    ) -> Result<(u64, Vec<RelayDeadLetter>), Failure> {
        let mut letters = Vec::new();
        // The events still to publish, and their messages (the same length, in order).
        let mut queue = Vec::with_capacity(batch.len());
        let mut messages = Vec::with_capacity(batch.len());
        for Prepared {
            outbound: event,
            message,
        } in batch
        {
            self.enqueue(
                event,
                message,
                parked,
                &mut letters,
                (&mut queue, &mut messages),
            );
        }
        // Each traced event's publishing, in its command's trace, until the broker answered.
        let _spans: Vec<_> = queue
            .iter()
            .filter_map(|outbound| {
                crate::trace::event_span("relay", &self.name, "publishes", &outbound.event)
            })
            .collect();
        let mut acknowledged = 0;
        while !queue.is_empty() {
            let outcomes = self.sink.publish(std::mem::take(&mut messages)).await;
            // The answered prefix: acknowledged, or refused for good (at the broker: the
            // stream's later messages of this batch may be stored already, a hole in its
            // order there that the dead letter records). Then the first failure, if any.
            let mut answered = 0;
            let mut failed = None;
            for (event, outcome) in queue.iter().zip(outcomes) {
                match outcome {
                    Ok(()) => acknowledged += 1,
                    Err(SinkError::Permanent(refusal)) => {
                        self.park(event, refusal, parked, &mut letters);
                    }
                    Err(error) => {
                        failed = Some(error);
                        break;
                    }
                }
                answered += 1;
            }
            queue.drain(..answered);
            if queue.is_empty() {
                break;
            }
            let error = failed
                .unwrap_or_else(|| SinkError::Transient("sending stopped".into()))
                .to_string();
            *attempt = attempt.saturating_add(1);
            tracing::warn!(relay = %self.name, %error, attempt = *attempt, "relay publishing again");
            self.set_state(RelayState::Retrying {
                error,
                attempt: *attempt,
            });
            tokio::time::sleep(backoff(self.retry_backoff, *attempt)).await;
            // The messages of the rest were handed over: prepared again.
            for event in std::mem::take(&mut queue) {
                let message = self.sink.prepare(&event);
                self.enqueue(
                    event,
                    message,
                    parked,
                    &mut letters,
                    (&mut queue, &mut messages),
                );
            }
        }
        Ok((acknowledged, letters))
    }

    /// Queues `event` with its message to publish, unless its stream is parked (a dead letter
    /// behind the refused event) or the sink refused it (parked).
    fn enqueue(
        &self,
        event: Outbound,
        message: Result<K::Message, String>,
        parked: &mut HashSet<String>,
        letters: &mut Vec<RelayDeadLetter>,
        (queue, messages): (&mut Vec<Outbound>, &mut Vec<K::Message>),
    ) {
        if parked.contains(&event.event.stream_id) {
            letters.push(RelayDeadLetter::behind(&event.event));
            return;
        }
        match message {
            Err(refusal) => self.park(&event, refusal, parked, letters),
            Ok(message) => {
                queue.push(event);
                messages.push(message);
            }
        }
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

/// How often a running relay reads its status, which records its lag and dead letters as
/// metrics (also after each batch that parked an event): when caught up, and while it works
/// off a backlog, as projection runners do.
const STATUS_INTERVAL: Duration = Duration::from_secs(5);
const BACKLOG_STATUS_INTERVAL: Duration = Duration::from_secs(30);

/// How often a relay looks for parked streams an operator asked it to publish again.
const RETRY_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// An event of a batch with its message, prepared (or refused) by the sink.
struct Prepared<M> {
    outbound: Outbound,
    message: Result<M, String>,
}

/// A batch of the feed, ready to publish.
struct Batch<M> {
    /// The feed position of its last event, filtered out or not (`None`: an empty read).
    last: Option<FeedPosition>,
    /// The events of the relayed aggregates, with their messages.
    messages: Vec<Prepared<M>>,
}

/// Turns a batch of the feed into messages, in the read-ahead task.
struct Preparer<K> {
    sink: Arc<K>,
    relay: Arc<str>,
    aggregate_types: Option<HashSet<String>>,
}

impl<K: Sink> Preparer<K> {
    fn prepare(&self, events: Vec<RecordedEvent>) -> Batch<K::Message> {
        let last = events.last().map(RecordedEvent::feed_position);
        let messages = events
            .into_iter()
            .filter(|event| {
                self.aggregate_types
                    .as_ref()
                    .is_none_or(|types| types.contains(&event.aggregate_type))
            })
            .map(|event| {
                let outbound = Outbound::new(event, Arc::clone(&self.relay));
                let message = self.sink.prepare(&outbound);
                Prepared { outbound, message }
            })
            .collect();
        Batch { last, messages }
    }
}

/// The feed read and its messages prepared one batch ahead, in a task of its own, while the
/// relay publishes and checkpoints the batch before: the database, the message building and
/// the broker work at the same time. The task ends with the relay's holding of the lease
/// (dropped: aborted).
struct ReadAhead<M> {
    batches: tokio::sync::mpsc::Receiver<crate::Result<Batch<M>>>,
    reader: tokio::task::JoinHandle<()>,
}

impl<M: Send + 'static> ReadAhead<M> {
    fn start<K: Sink<Message = M>>(
        mut feed: Subscription<PostgresStore>,
        preparer: Preparer<K>,
    ) -> Self {
        let (sender, batches) = tokio::sync::mpsc::channel(1);
        let reader = tokio::spawn(async move {
            loop {
                let batch = feed.next_batch().await;
                let failed = batch.is_err();
                let batch = batch.map(|events| preparer.prepare(events));
                if sender.send(batch).await.is_err() || failed {
                    return;
                }
            }
        });
        Self { batches, reader }
    }

    async fn next(&mut self) -> crate::Result<Batch<M>> {
        match self.batches.recv().await {
            Some(batch) => batch,
            // The reader is gone without a word: it panicked.
            None => Err(crate::Error::Backend(
                "the relay's feed reader stopped".into(),
            )),
        }
    }
}

impl<M> Drop for ReadAhead<M> {
    fn drop(&mut self) {
        self.reader.abort();
    }
}
