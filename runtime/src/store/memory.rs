//! An in-memory event store: for tests, examples and prototypes. Nothing survives the process.

use std::collections::HashMap;
use std::ops::RangeBounds;
use std::sync::{Arc, PoisonError, RwLock};

use chrono::{DateTime, SubsecRound, Utc};

use super::Limits;
use super::backend::{StoredId, check_append, classify_retry, version_bounds};
use super::keys::{self, KeyTable, Keyring};
use super::{EventStore, ExpectedVersion, FeedBatch, FeedPosition, FeedQuery};
use super::{FeedNotifier, FeedWakeups};
use crate::envelope::{NewEvent, RecordedEvent};
use crate::error::{Error, Result};
use crate::pii::KeyProvider;
use crate::snapshot::Snapshot;

/// An [`EventStore`] in memory. Cloning shares the same store.
///
/// ```
/// # tokio_test_block_on(async {
/// use factum::{EventStore, ExpectedVersion, MemoryStore, NewEvent, Payload};
///
/// let store = MemoryStore::new();
/// let event = NewEvent::new("Pinged", 1, Payload::encode(&serde_json::json!({"n": 1}))?);
/// let stored = store.append("ping-1", "Pinger", ExpectedVersion::NoStream, vec![event]).await?;
/// assert_eq!(stored[0].stream_version, 1);
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    log: Arc<RwLock<Log>>,
    notifier: FeedNotifier,
    limits: Limits,
    /// Seals and opens personal data (`None`: events with `#[pii]` fields are refused).
    keys: Option<Keyring>,
    /// Data subjects forgotten through this store ([`EventStore::forgets`]).
    forgets: Arc<std::sync::atomic::AtomicU64>,
}

#[derive(Debug, Default)]
struct Log {
    /// Every event, in feed order; an event's global position is its index + 1.
    events: Vec<RecordedEvent>,
    streams: HashMap<String, Stream>,
    /// Event id → index in `events`.
    ids: HashMap<uuid::Uuid, usize>,
    /// Appends so far: the `tx` of the last one.
    tx: u64,
    snapshots: HashMap<String, Snapshot>,
    /// Data subject → its data key, wrapped.
    data_keys: HashMap<String, (uuid::Uuid, Vec<u8>)>,
}

#[derive(Debug)]
struct Stream {
    aggregate_type: String,
    /// Indices into `Log::events`, in version order.
    events: Vec<usize>,
}

impl MemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// This store (sharing its events) with other size limits for appends.
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The size limits of appends.
    #[must_use]
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Log> {
        // Appends validate before they mutate, so a panic elsewhere cannot leave the log torn.
        self.log.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Log> {
        self.log.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Log {
    fn version_of(&self, stream_id: &str) -> u64 {
        self.streams
            .get(stream_id)
            .map_or(0, |stream| stream.events.len() as u64)
    }

    /// When some ids of the append are stored: the stored events of an idempotent retry, or
    /// an error.
    fn find_retry(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<Option<Vec<RecordedEvent>>> {
        let stored: Vec<StoredId> = events
            .iter()
            .filter_map(|event| self.ids.get(&event.event_id))
            .map(|&index| {
                let at = &self.events[index];
                StoredId {
                    event_id: at.event_id,
                    stream_id: at.stream_id.clone(),
                    stream_version: at.stream_version,
                }
            })
            .collect();
        if stored.is_empty() {
            return Ok(None);
        }
        classify_retry(stream_id, expected, events, &stored)?;
        Ok(Some(
            events
                .iter()
                .filter_map(|e| self.ids.get(&e.event_id).map(|&i| self.events[i].clone()))
                .collect(),
        ))
    }
}

/// Microseconds, as SQL stores keep them, so that envelopes compare equal across stores.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

impl MemoryStore {
    /// An append whose personal data is sealed.
    fn append_sealed(
        &self,
        stream_id: &str,
        aggregate_type: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>> {
        let mut log = self.write();
        if let Some(stored) = log.find_retry(stream_id, expected, &events)? {
            return Ok(stored);
        }
        let current = log.version_of(stream_id);
        if !expected.accepts(current) {
            return Err(Error::Conflict {
                stream_id: stream_id.to_owned(),
                expected,
                actual: current,
            });
        }
        if let Some(stream) = log.streams.get(stream_id)
            && stream.aggregate_type != aggregate_type
        {
            {
                return Err(Error::AggregateTypeMismatch {
                    stream_id: stream_id.to_owned(),
                    existing: stream.aggregate_type.clone(),
                    requested: aggregate_type.to_owned(),
                });
            }
        }
        if events.is_empty() {
            return Ok(Vec::new());
        }

        log.tx += 1;
        let tx = log.tx;
        let recorded_at = now();
        let mut indices = Vec::with_capacity(events.len());
        let mut recorded = Vec::with_capacity(events.len());
        for (offset, event) in events.into_iter().enumerate() {
            let index = log.events.len();
            let envelope = event.into_recorded(
                (stream_id, aggregate_type),
                current + 1 + offset as u64,
                (tx, index as u64 + 1),
                recorded_at,
            );
            log.ids.insert(envelope.event_id, index);
            recorded.push(envelope.clone());
            log.events.push(envelope);
            indices.push(index);
        }
        log.streams
            .entry(stream_id.to_owned())
            .or_insert_with(|| Stream {
                aggregate_type: aggregate_type.to_owned(),
                events: Vec::new(),
            })
            .events
            .extend(indices);
        drop(log);
        self.notifier.notify();
        Ok(recorded)
    }

    /// A stream's events as stored.
    fn stream_events(
        &self,
        stream_id: &str,
        versions: &impl RangeBounds<u64>,
    ) -> Vec<RecordedEvent> {
        let (from, to) = version_bounds(versions);
        let log = self.read();
        let Some(stream) = log.streams.get(stream_id) else {
            return Vec::new();
        };
        // Version v is at index v - 1.
        let start = usize::try_from(from.max(1) - 1).unwrap_or(usize::MAX);
        let end = usize::try_from(to)
            .unwrap_or(usize::MAX)
            .min(stream.events.len());
        stream
            .events
            .get(start..end)
            .unwrap_or_default()
            .iter()
            .map(|&index| log.events[index].clone())
            .collect()
    }

    /// A read of the feed, as stored.
    fn feed_events(&self, query: &FeedQuery) -> FeedBatch {
        if query.limit == 0 {
            return FeedBatch::new(Vec::new(), query.after);
        }
        let log = self.read();
        // The log is in feed order, and `tx` and position both grow with the index.
        let start = log
            .events
            .partition_point(|event| event.feed_position() <= query.after);
        let mut events = Vec::new();
        for event in &log.events[start..] {
            if events.len() >= query.limit {
                break;
            }
            if query.matches(&event.event_type) {
                events.push(event.clone());
            }
        }
        let next = match events.last() {
            Some(last) if events.len() >= query.limit => last.feed_position(),
            _ => FeedPosition::end_of_tx(log.tx).max(query.after),
        };
        FeedBatch::new(events, next)
    }

    /// Opens the personal data of events read (nothing to do without a key provider).
    async fn open_pii(&self, events: &mut [RecordedEvent]) -> Result<()> {
        match &self.keys {
            Some(keys) => keys.open(self, events).await,
            None => Ok(()),
        }
    }

    /// Opens the sealed personal data of `events` read elsewhere (a relay's messages, an
    /// export) with this store's data keys: decrypted, or their replacements when the subject
    /// was forgotten (marked [`shredded`](crate::envelope::Envelope::shredded)).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when the store has no key provider; a
    /// [`PiiError`](crate::pii::PiiError) when sealed data does not decrypt under its key.
    pub async fn open_personal_data(&self, events: &mut [RecordedEvent]) -> Result<()> {
        match &self.keys {
            Some(keys) => keys.open(self, events).await,
            None => Err(keys::no_key_provider()),
        }
    }

    /// This store (sharing its events) sealing the `#[pii]` fields of the events it appends
    /// under data keys wrapped by `provider`, and opening them in everything it reads (see
    /// [`crate::pii`]). Without one, an event with personal data is refused.
    #[must_use]
    pub fn with_key_provider(mut self, provider: impl KeyProvider) -> Self {
        self.keys = Some(Keyring::new(Arc::new(provider)));
        self
    }

    /// Forgets a data subject (crypto-shredding): deletes its data key and the snapshots of
    /// the streams holding data sealed under it, so that the `#[pii]` fields of its events
    /// read as their replacements from now on. Whether it had a key.
    ///
    /// # Errors
    /// None today; the signature is every store's.
    pub async fn forget(&self, subject: &str) -> Result<bool> {
        keys::forget(self.keys.as_ref(), self, &self.forgets, subject).await
    }
}

impl KeyTable for MemoryStore {
    async fn wrapped_key(&self, id: uuid::Uuid) -> Result<Option<Vec<u8>>> {
        Ok(self
            .read()
            .data_keys
            .values()
            .find(|(key_id, _)| *key_id == id)
            .map(|(_, wrapped)| wrapped.clone()))
    }

    async fn subject_key(&self, subject: &str) -> Result<Option<(uuid::Uuid, Vec<u8>)>> {
        Ok(self.read().data_keys.get(subject).cloned())
    }

    async fn insert_subject_key(
        &self,
        subject: &str,
        id: uuid::Uuid,
        wrapped: &[u8],
    ) -> Result<(uuid::Uuid, Vec<u8>)> {
        Ok(self
            .write()
            .data_keys
            .entry(subject.to_owned())
            .or_insert_with(|| (id, wrapped.to_vec()))
            .clone())
    }

    async fn forget_subject(&self, subject: &str) -> Result<Option<uuid::Uuid>> {
        let mut log = self.write();
        let Some((id, _)) = log.data_keys.remove(subject) else {
            return Ok(None);
        };
        let key_id = id.to_string();
        let streams: std::collections::HashSet<String> = log
            .events
            .iter()
            .filter(|event| event.event.as_str().contains(&key_id))
            .map(|event| event.stream_id.clone())
            .collect();
        log.snapshots
            .retain(|stream_id, _| !streams.contains(stream_id));
        Ok(Some(id))
    }
}

impl EventStore for MemoryStore {
    async fn forget(&self, subject: &str) -> Result<bool> {
        Self::forget(self, subject).await
    }

    fn forgets(&self) -> u64 {
        self.forgets.load(std::sync::atomic::Ordering::Acquire)
    }

    async fn append(
        &self,
        stream_id: &str,
        aggregate_type: &str,
        expected: ExpectedVersion,
        mut events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>> {
        let started = std::time::Instant::now();
        let outcome = async {
            check_append(stream_id, &events, &self.limits)?;
            let plain = keys::seal(self.keys.as_ref(), self, &mut events).await?;
            let mut recorded = self.append_sealed(stream_id, aggregate_type, expected, events)?;
            keys::unseal_appended(&mut recorded, plain);
            Ok(recorded)
        }
        .await;
        crate::metrics::appended("memory", aggregate_type, &outcome, started.elapsed());
        outcome
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        versions: impl RangeBounds<u64> + Send,
    ) -> Result<Vec<RecordedEvent>> {
        let mut events = self.stream_events(stream_id, &versions);
        self.open_pii(&mut events).await?;
        Ok(events)
    }

    async fn read_feed(&self, query: &FeedQuery) -> Result<FeedBatch> {
        let mut batch = self.feed_events(query);
        self.open_pii(&mut batch.events).await?;
        Ok(batch)
    }

    async fn stream_version(&self, stream_id: &str) -> Result<u64> {
        Ok(self.read().version_of(stream_id))
    }

    async fn read_event(&self, event_id: uuid::Uuid) -> Result<Option<RecordedEvent>> {
        let mut event = {
            let log = self.read();
            log.ids
                .get(&event_id)
                .map(|&index| log.events[index].clone())
        };
        self.open_pii(event.as_mut_slice()).await?;
        Ok(event)
    }

    async fn load_snapshot(&self, stream_id: &str) -> Result<Option<Snapshot>> {
        Ok(self.read().snapshots.get(stream_id).cloned())
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        let mut log = self.write();
        let keep_stored = log
            .snapshots
            .get(&snapshot.stream_id)
            .is_some_and(|stored| {
                stored.state_version == snapshot.state_version
                    && stored.stream_version >= snapshot.stream_version
            });
        if !keep_stored {
            log.snapshots.insert(snapshot.stream_id.clone(), snapshot);
        }
        Ok(())
    }

    fn wakeups(&self) -> FeedWakeups {
        self.notifier.subscribe()
    }
}
