//! The data keys of personal data (crypto-shredding, see [`crate::pii`]): one per data subject,
//! wrapped by the store's [`KeyProvider`] and kept in the store's `data_keys` table, outside
//! the append-only log. A store seals the `#[pii]` fields of the events it appends and opens
//! them in every event it reads; forgetting a subject deletes its key.
//!
//! Keys are cached in the process: a key found present for at most [`Keyring::CACHE_TTL`] (so
//! that a subject forgotten by another process stops decrypting here within that time; one
//! forgotten through this store, at once), a key found deleted for good (key ids are never
//! reused); as many as the provider allows ([`KeyProvider::cached_keys`]), the least recently
//! used making way.

use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use lru::LruCache;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::envelope::{NewEvent, RecordedEvent};
use crate::error::{Error, Result};
use crate::event::Payload;
use crate::pii::{self, DataKey, KeyProvider, PiiError, SealedPayload};

/// Where a store keeps its data keys.
pub(crate) trait KeyTable: Sync {
    /// The wrapped key of this id, if it exists.
    fn wrapped_key(&self, id: Uuid) -> impl Future<Output = Result<Option<Vec<u8>>>> + Send;

    /// The subject's key, if it has one.
    fn subject_key(
        &self,
        subject: &str,
    ) -> impl Future<Output = Result<Option<(Uuid, Vec<u8>)>>> + Send;

    /// Stores `wrapped` as the subject's key unless it has one already; the subject's key.
    fn insert_subject_key(
        &self,
        subject: &str,
        id: Uuid,
        wrapped: &[u8],
    ) -> impl Future<Output = Result<(Uuid, Vec<u8>)>> + Send;

    /// Deletes the subject's key and, in the same transaction, the snapshots of the streams
    /// holding data sealed under it (aggregate states hold that data in plain); whether the
    /// subject had a key: its id. It scans the log for the key's id: forgetting is rare, and
    /// the log has no index by subject.
    fn forget_subject(&self, subject: &str) -> impl Future<Output = Result<Option<Uuid>>> + Send;

    /// Whether offering a new key costs no more than looking the subject up, so that the key
    /// ring, on a subject it has no key of at hand, offers one ([`insert_subject_key`]: stored
    /// unless the subject has a key, which comes back instead) rather than asking first: a new
    /// subject's first event then saves a round trip (PostgreSQL). Not where an insert takes a
    /// write lock that a lookup does not (SQLite).
    ///
    /// [`insert_subject_key`]: KeyTable::insert_subject_key
    fn offers_first(&self) -> bool {
        false
    }

    /// Whether what this table holds is committed, so that the key ring may cache a subject's
    /// key from it. Not so inside a caller's transaction, which may yet roll back the key it
    /// made: a cached key whose row never committed would seal data no one can read.
    fn committed(&self) -> bool {
        true
    }

    /// Where the events' table keeps sealed data: in the payload unless it has a column for it.
    fn placement(&self) -> pii::Placement {
        pii::Placement::Payload
    }
}

/// A store's key provider and its cache of unwrapped data keys. Cloning shares the cache.
#[derive(Clone)]
pub(crate) struct Keyring {
    provider: Arc<dyn KeyProvider>,
    cache: Arc<Mutex<Cache>>,
    /// A key made and wrapped, offered to a subject that turned out to have one already:
    /// offered again to the next subject, so that offering first wraps few keys that are never
    /// stored (one kept at a time: misses at once may each wrap one, and a process that meets
    /// no new subject wraps one it never stores). Never one whose offer failed (it may have
    /// been stored: two subjects must never share key material).
    spare: Arc<Mutex<Option<Spare>>>,
}

/// A data key no subject has, and its wrapped form.
struct Spare {
    key: DataKey,
    wrapped: Vec<u8>,
}

/// New data keys offered to subjects that had none at hand (in the subjects' order), each to
/// be stored in the statement that stores the events sealed under it, which stores the events
/// only when every offered key was taken: a new subject's first event then costs one commit,
/// not two (PostgreSQL). Kept ([`Keyring::keep`]) once stored. When the events were not
/// stored, the statement says which keys it stored and which keys the subjects have
/// ([`OfferAnswer`], [`Keyring::settle`]); an offered key is never offered again, since it
/// may have been stored (two subjects must never share key material, and a forgotten key's id
/// never comes back). After an error that leaves unknown what was stored, dropped.
#[derive(Default)]
pub(crate) struct Offers(Vec<Offer>);

/// What an append that offered keys (see [`Offers`]) and stored no event found.
#[cfg(feature = "postgres")]
#[derive(Default)]
pub(crate) struct OfferAnswer {
    /// The ids of the offered keys it stored: their subjects'.
    pub taken: Vec<Uuid>,
    /// The keys of subjects that had one: id, subject, wrapped key.
    pub existing: Vec<(Uuid, String, Vec<u8>)>,
}

/// A key offered to a subject.
struct Offer {
    subject: String,
    id: Uuid,
    key: Arc<DataKey>,
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    wrapped: Vec<u8>,
}

#[cfg(feature = "postgres")]
impl Offers {
    /// Whether no key is offered.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The offered keys' ids, subjects and wrapped forms, as three columns.
    pub(crate) fn columns(&self) -> (Vec<Uuid>, Vec<&str>, Vec<&[u8]>) {
        let ids = self.0.iter().map(|offer| offer.id).collect();
        let subjects = self.0.iter().map(|offer| offer.subject.as_str()).collect();
        let wrapped = self
            .0
            .iter()
            .map(|offer| offer.wrapped.as_slice())
            .collect();
        (ids, subjects, wrapped)
    }
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

struct Cache {
    /// Key id → the key (`None`: deleted), and when it was found present.
    by_id: LruCache<Uuid, (Option<Arc<DataKey>>, Instant)>,
    /// Subject → its key, and when it was found.
    by_subject: LruCache<String, (Uuid, Arc<DataKey>, Instant)>,
    /// Subjects found with a key, kept longer than their keys ([`Keyring::SEEN_PER_KEY`] as
    /// many): a subject here whose key is not at hand (evicted, or found too long ago) is
    /// asked for it on its own rather than offered a key with its events, which would cost
    /// a statement heavier than the question.
    seen: LruCache<String, ()>,
}

impl Keyring {
    /// How many subjects found with a key are remembered per key kept (see `Cache::seen`).
    const SEEN_PER_KEY: NonZeroUsize = NonZeroUsize::new(16).expect("not zero");

    /// How long a key found present is used without asking the table again.
    pub(crate) const CACHE_TTL: Duration = Duration::from_secs(30);

    /// A key ring of `provider`, caching as many keys as it allows (by id and by subject).
    pub(crate) fn new(provider: Arc<dyn KeyProvider>) -> Self {
        let capacity = provider.cached_keys();
        Self {
            provider,
            cache: Arc::new(Mutex::new(Cache {
                by_id: LruCache::new(capacity),
                by_subject: LruCache::new(capacity),
                seen: LruCache::new(capacity.saturating_mul(Self::SEEN_PER_KEY)),
            })),
            spare: Arc::default(),
        }
    }

    /// The same provider with a cache of its own (a tenant's store: its subjects are not
    /// another tenant's subjects of the same id).
    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    pub(crate) fn apart(&self) -> Self {
        Self::new(Arc::clone(&self.provider))
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The subject's key, made and stored if it has none. With `offers`, a subject without a
    /// key at hand and not seen with one (see `Cache::seen`) is offered a new one there, to be
    /// stored with the events it seals ([`Offers`]), instead of in a statement of its own.
    async fn key_for(
        &self,
        table: &impl KeyTable,
        subject: &str,
        offers: Option<&mut Offers>,
    ) -> Result<(Uuid, Arc<DataKey>)> {
        if let Some((id, key, found)) = self.cache().by_subject.get(subject)
            && found.elapsed() < Self::CACHE_TTL
        {
            return Ok((*id, key.clone()));
        }
        if let Some(offers) = offers
            && !self.cache().seen.contains(subject)
        {
            if let Some(offer) = offers.0.iter().find(|offer| offer.subject == subject) {
                return Ok((offer.id, offer.key.clone()));
            }
            let Spare { key, wrapped } = self.spare_or_new().await?;
            let (id, key) = (Uuid::now_v7(), Arc::new(key));
            // In the subjects' order: two appends offering keys to the same subjects insert
            // them in the same order, and never wait on each other in a cycle.
            let at = offers
                .0
                .partition_point(|offer| offer.subject.as_str() < subject);
            offers.0.insert(
                at,
                Offer {
                    subject: subject.to_owned(),
                    id,
                    key: key.clone(),
                    wrapped,
                },
            );
            return Ok((id, key));
        }
        let (id, key) = if table.offers_first() {
            self.offer(table, subject).await?
        } else {
            match table.subject_key(subject).await? {
                Some((id, wrapped)) => (id, Arc::new(self.provider.unwrap(&wrapped).await?)),
                None => self.offer(table, subject).await?,
            }
        };
        if table.committed() {
            self.remember(subject, id, &key);
        }
        Ok((id, key))
    }

    /// Caches `key` as the subject's, stored under `id`.
    fn remember(&self, subject: &str, id: Uuid, key: &Arc<DataKey>) {
        let now = Instant::now();
        let mut cache = self.cache();
        cache
            .by_subject
            .put(subject.to_owned(), (id, key.clone(), now));
        cache.seen.put(subject.to_owned(), ());
        cache.by_id.put(id, (Some(key.clone()), now));
    }

    /// Caches the keys of `offers`, stored (committed) with the events they sealed.
    #[cfg(feature = "postgres")]
    pub(crate) fn keep(&self, offers: Offers) {
        for offer in offers.0 {
            self.remember(&offer.subject, offer.id, &offer.key);
        }
    }

    /// Takes in what an append that offered keys and stored no event found (see [`Offers`]):
    /// the offered keys it stored are their subjects' (committed), the keys it found of
    /// subjects that had one are theirs; all cached. An offered key it did not store was
    /// never stored, and no data is sealed under it: the spare, when there is none.
    #[cfg(feature = "postgres")]
    pub(crate) async fn settle(&self, offers: Offers, answer: OfferAnswer) -> Result<()> {
        for offer in offers.0 {
            if answer.taken.contains(&offer.id) {
                self.remember(&offer.subject, offer.id, &offer.key);
            } else if let Some(key) = Arc::into_inner(offer.key) {
                self.keep_spare(Spare {
                    key,
                    wrapped: offer.wrapped,
                });
            }
        }
        for (id, subject, wrapped) in answer.existing {
            let key = Arc::new(self.provider.unwrap(&wrapped).await?);
            self.remember(&subject, id, &key);
        }
        Ok(())
    }

    /// Keeps `spare`, a key no subject has, for the next new subject: the one kept when there is
    /// one already (which goes first).
    fn keep_spare(&self, spare: Spare) {
        self.spare
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(spare);
    }

    /// The spare key, or a new one made and wrapped.
    async fn spare_or_new(&self) -> Result<Spare> {
        let taken = self
            .spare
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        Ok(match taken {
            Some(spare) => spare,
            None => {
                let key = DataKey::generate()?;
                let wrapped = self.provider.wrap(&key).await?;
                Spare { key, wrapped }
            }
        })
    }

    /// Offers the subject a new key (the spare, or one made now): stored unless the subject
    /// has one, which is unwrapped instead, the offered key kept as the spare.
    async fn offer(&self, table: &impl KeyTable, subject: &str) -> Result<(Uuid, Arc<DataKey>)> {
        let spare = self.spare_or_new().await?;
        let offered = Uuid::now_v7();
        // On an error the offer may have been stored: the spare goes with it.
        let (id, wrapped) = table
            .insert_subject_key(subject, offered, &spare.wrapped)
            .await?;
        if id == offered {
            return Ok((id, Arc::new(spare.key)));
        }
        self.keep_spare(spare);
        Ok((id, Arc::new(self.provider.unwrap(&wrapped).await?)))
    }

    /// Seals the personal data of `events` in place (the events of types with `#[pii]`
    /// fields); each event's payload before sealing, for those sealed. With `offers`, the keys
    /// of new subjects are offered there (see [`Keyring::key_for`]).
    pub(crate) async fn seal(
        &self,
        table: &impl KeyTable,
        events: &mut [NewEvent],
        mut offers: Option<&mut Offers>,
    ) -> Result<Vec<(Uuid, Payload)>> {
        let mut plain = Vec::new();
        for event in events.iter_mut() {
            let Some(spec) = event.pii else {
                continue;
            };
            let mut payload = payload_object(event.payload.as_str(), &event.event_type)?;
            let subject = pii::subject_of(&payload, spec, &event.event_type)?;
            let (id, key) = self.key_for(table, &subject, offers.as_deref_mut()).await?;
            event.sealed = pii::seal(&mut payload, spec, id, &key, table.placement())?;
            let sealed = encoded(&payload)?;
            plain.push((
                event.event_id,
                std::mem::replace(&mut event.payload, sealed),
            ));
        }
        Ok(plain)
    }

    /// The key of this id, from the cache or the table (`None`: deleted).
    async fn key(&self, table: &impl KeyTable, id: Uuid) -> Result<Option<Arc<DataKey>>> {
        match self.cache().by_id.get(&id) {
            Some((key @ Some(_), at)) if at.elapsed() < Self::CACHE_TTL => return Ok(key.clone()),
            Some((None, _)) => return Ok(None),
            _ => {}
        }
        let key = match table.wrapped_key(id).await? {
            Some(wrapped) => Some(Arc::new(self.provider.unwrap(&wrapped).await?)),
            None => None,
        };
        if table.committed() {
            self.cache().by_id.put(id, (key.clone(), Instant::now()));
        }
        Ok(key)
    }

    /// A stored payload with its sealed fields opened (decrypted, or their replacement when
    /// the subject was forgotten); `None` when nothing in it is sealed. `last` holds the key
    /// of the read's event before: one read asks the cache once per key.
    pub(crate) async fn open_payload(
        &self,
        table: &impl KeyTable,
        payload: &str,
        last: &mut LastKey,
    ) -> Result<Option<Opened>> {
        let Some((sealed, key_id)) = sealed(payload)? else {
            return Ok(None);
        };
        let key = last.key.get(key_id, || self.key(table, key_id)).await?;
        Opened::new(&sealed, key_id, key).map(Some)
    }

    /// Like [`Keyring::open_payload`], but opens into `last`'s buffer, which a long read
    /// reuses for every event, and reads the sealed data from `column` when the row has it
    /// there ([`pii::Placement::Column`]): the opened text, or `None` when nothing in `payload`
    /// is sealed.
    #[cfg(feature = "postgres")]
    pub(crate) async fn open_payload_in_place<'l>(
        &self,
        table: &impl KeyTable,
        payload: &str,
        column: Option<&[u8]>,
        last: &'l mut LastKey,
    ) -> Result<Option<&'l str>> {
        let Some((sealed, key_id)) = sealed_in(payload, column)? else {
            return Ok(None);
        };
        let LastKey { key, opened } = last;
        let key = key.get(key_id, || self.key(table, key_id)).await?;
        sealed.open_into(key, opened)?;
        Ok(Some(opened.as_str()))
    }

    /// [`Keyring::open_payload_in_place`] without waiting: when nothing in `payload` is sealed,
    /// or it is sealed under the key `last` holds (a long read's events after its first), as
    /// most of a stream's events are; [`InPlace::NeedsKey`] when the key must be looked up.
    /// Spares each such event the asynchronous path.
    #[cfg(feature = "postgres")]
    pub(crate) fn open_payload_kept<'l>(
        payload: &str,
        column: Option<&[u8]>,
        last: &'l mut LastKey,
    ) -> Result<InPlace<'l>> {
        let Some((sealed, key_id)) = sealed_in(payload, column)? else {
            return Ok(InPlace::Plain);
        };
        let LastKey { key, opened } = last;
        let Some(key) = key.kept(key_id) else {
            return Ok(InPlace::NeedsKey);
        };
        sealed.open_into(key, opened)?;
        Ok(InPlace::Opened(opened.as_str()))
    }

    /// Opens the sealed fields of each event, marking those whose subject was forgotten
    /// [`shredded`](crate::envelope::Envelope::shredded) and each with its
    /// [`data_key`](crate::envelope::Envelope::data_key).
    pub(crate) async fn open(
        &self,
        table: &impl KeyTable,
        events: &mut [RecordedEvent],
    ) -> Result<()> {
        let mut last = LastKey::default();
        for event in events {
            if let Some(opened) = self
                .open_payload(table, event.event.as_str(), &mut last)
                .await?
            {
                opened.apply(event);
            }
        }
        Ok(())
    }

    /// Deletes the subject's key, in the table and in the cache (where it may be found by
    /// subject and by id): its sealed fields read as their replacements from now on. Whether
    /// it had one.
    pub(crate) async fn forget(&self, table: &impl KeyTable, subject: &str) -> Result<bool> {
        let deleted = table.forget_subject(subject).await?;
        let mut cache = self.cache();
        cache.by_subject.pop(subject);
        cache.seen.pop(subject);
        if let Some(id) = deleted {
            cache.by_id.put(id, (None, Instant::now()));
        }
        Ok(deleted.is_some())
    }
}

/// What a read keeps from one event to the next: the data key of the event it opened last
/// (`None` inside: deleted), used again for the next event under the same key (a stream's
/// events are mostly one subject's), and the buffer it opens payloads into. A read's events
/// open under the keys as the read found them.
#[derive(Default)]
pub(crate) struct LastKey {
    key: KeptKey,
    #[cfg(feature = "postgres")]
    opened: String,
}

#[cfg(feature = "postgres")]
impl LastKey {
    /// Keeps `text` in the buffer, for the read's event to borrow.
    pub(crate) fn hold(&mut self, text: String) -> &str {
        self.opened = text;
        &self.opened
    }
}

/// What [`Keyring::open_payload_kept`] made of a payload.
#[cfg(feature = "postgres")]
pub(crate) enum InPlace<'l> {
    /// Nothing in it is sealed.
    Plain,
    /// Opened, in the read's buffer.
    Opened(&'l str),
    /// Sealed under another key than the one kept: it is to be looked up.
    NeedsKey,
}

/// The sealed data of a stored payload, in its `column` when the row has it there, and the
/// key it needs; `None` when nothing is sealed.
#[cfg(feature = "postgres")]
fn sealed_in<'a>(
    payload: &'a str,
    column: Option<&'a [u8]>,
) -> Result<Option<(SealedPayload<'a>, Uuid)>> {
    match column {
        Some(column) => {
            let sealed = SealedPayload::read_column(payload, column)?;
            Ok(sealed.key_id().map(|key_id| (sealed, key_id)))
        }
        None => sealed(payload),
    }
}

/// The data key a read used last, with its id.
#[derive(Default)]
struct KeptKey(Option<(Uuid, Option<Arc<DataKey>>)>);

impl KeptKey {
    /// The key `key_id` when it is the one kept (`Some(None)`: kept as deleted).
    #[cfg(feature = "postgres")]
    fn kept(&self, key_id: Uuid) -> Option<Option<&DataKey>> {
        match &self.0 {
            Some((id, key)) if *id == key_id => Some(key.as_deref()),
            _ => None,
        }
    }

    /// The key `key_id`: the one kept, or the one `find` finds (which is kept instead).
    async fn get<F>(&mut self, key_id: Uuid, find: impl FnOnce() -> F) -> Result<Option<&DataKey>>
    where
        F: Future<Output = Result<Option<Arc<DataKey>>>>,
    {
        if self.0.as_ref().is_none_or(|(id, _)| *id != key_id) {
            self.0 = Some((key_id, find().await?));
        }
        Ok(self.0.as_ref().and_then(|(_, key)| key.as_deref()))
    }
}

/// A stored payload's sealed field and the id of the data key it needs; `None` when nothing
/// in it is sealed.
///
/// # Errors
/// [`PiiError::Malformed`] for a sealed field in an unknown form.
pub(crate) fn sealed(payload: &str) -> Result<Option<(SealedPayload<'_>, Uuid)>> {
    if !pii::may_be_sealed(payload) {
        return Ok(None);
    }
    let sealed = SealedPayload::read(payload)?;
    Ok(sealed.key_id().map(|key_id| (sealed, key_id)))
}

/// A stored payload whose sealed fields were opened.
pub(crate) struct Opened {
    /// The payload with the fields in place: in plain, or their replacements.
    pub payload: Payload,
    /// Whether the fields were erased (the key was deleted).
    pub shredded: bool,
    /// The data key they were sealed under.
    pub key: Uuid,
}

impl Opened {
    /// `sealed` (under the key `key_id`) opened with `key`, or as erased without it.
    ///
    /// # Errors
    /// [`PiiError::Tampered`] when it does not decrypt under `key`; [`PiiError::Malformed`].
    pub(crate) fn new(
        sealed: &SealedPayload<'_>,
        key_id: Uuid,
        key: Option<&DataKey>,
    ) -> Result<Self> {
        let (opened, shredded) = sealed.open(key)?;
        Ok(Self {
            payload: Payload::from_stored_json(opened),
            shredded,
            key: key_id,
        })
    }

    /// Puts the opened payload in `event`, marking it shredded or not and naming its key.
    pub(crate) fn apply(self, event: &mut RecordedEvent) {
        event.event = self.payload;
        event.shredded = self.shredded;
        event.data_key = Some(self.key);
    }
}

/// A payload from its JSON object (which always serializes).
fn encoded(payload: &Map<String, Value>) -> Result<Payload> {
    Payload::encode(payload).map_err(|e| {
        PiiError::Malformed {
            field: String::new(),
            reason: e.to_string(),
        }
        .into()
    })
}

/// A payload's top-level JSON object.
fn payload_object(payload: &str, event_type: &str) -> Result<Map<String, Value>> {
    match serde_json::from_str(payload) {
        Ok(Value::Object(object)) => Ok(object),
        _ => Err(PiiError::Malformed {
            field: String::new(),
            reason: format!("the payload of `{event_type}` is no JSON object"),
        }
        .into()),
    }
}

/// Seals `events` under `keys`; without a key ring, an event with personal data is refused
/// ([`PiiError::NoKeyProvider`]).
pub(crate) async fn seal(
    keys: Option<&Keyring>,
    table: &impl KeyTable,
    events: &mut [NewEvent],
) -> Result<Vec<(Uuid, Payload)>> {
    seal_offering(keys, table, events, None).await
}

/// [`seal`], the keys of new subjects offered in `offers` when given (see [`Offers`]).
pub(crate) async fn seal_offering(
    keys: Option<&Keyring>,
    table: &impl KeyTable,
    events: &mut [NewEvent],
    offers: Option<&mut Offers>,
) -> Result<Vec<(Uuid, Payload)>> {
    match keys {
        Some(keys) => keys.seal(table, events, offers).await,
        None => match events.iter().find(|event| event.pii.is_some()) {
            Some(event) => Err(PiiError::NoKeyProvider {
                event_type: event.event_type.to_string(),
            }
            .into()),
            None => Ok(Vec::new()),
        },
    }
}

/// Forgets `subject` in `table` (see [`EventStore::forget`]), through the store's key ring
/// when it has one (which drops the subject's key from its cache), and counts it in the
/// store's `forgets` ([`EventStore::forgets`]).
///
/// [`EventStore::forget`]: crate::store::EventStore::forget
/// [`EventStore::forgets`]: crate::store::EventStore::forgets
pub(crate) async fn forget(
    keys: Option<&Keyring>,
    table: &impl KeyTable,
    forgets: &std::sync::atomic::AtomicU64,
    subject: &str,
) -> Result<bool> {
    let forgotten = match keys {
        Some(keys) => keys.forget(table, subject).await?,
        None => table.forget_subject(subject).await?.is_some(),
    };
    forgets.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    tracing::info!(forgotten, "forgot a data subject");
    Ok(forgotten)
}

/// Gives events to append back their payloads from before sealing (to seal them again).
#[cfg(feature = "postgres")]
pub(crate) fn unseal(events: &mut [NewEvent], plain: Vec<(Uuid, Payload)>) {
    for (event_id, payload) in plain {
        if let Some(event) = events.iter_mut().find(|event| event.event_id == event_id) {
            event.payload = payload;
            event.sealed = None;
        }
    }
}

/// Gives appended events back their payloads from before sealing.
pub(crate) fn unseal_appended(appended: &mut [RecordedEvent], plain: Vec<(Uuid, Payload)>) {
    for (event_id, payload) in plain {
        if let Some(event) = appended.iter_mut().find(|event| event.event_id == event_id) {
            event.event = payload;
        }
    }
}

/// Why a store without a key provider cannot open personal data read elsewhere.
pub(crate) fn no_key_provider() -> Error {
    Error::InvalidConfig(
        "opening personal data needs the data keys' store with a key provider: give it one with `with_key_provider(...)` (for example `LocalKeyProvider::from_env()`)".to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::num::NonZeroUsize;

    use super::*;
    use crate::MemoryStore;
    use crate::pii::LocalKeyProvider;

    #[tokio::test]
    async fn the_cache_keeps_as_many_subjects_as_the_provider_allows() {
        // Three subjects in turn, then their keys deleted from the table behind the key ring's
        // back, then the three again: a key still cached is used as it was; one the cache made
        // way for is looked up, found missing, and made anew. With room for two, each turn
        // finds the subject it needs evicted; with room for three, none.
        for (room, made_anew) in [(2, 3), (3, 0)] {
            let provider = LocalKeyProvider::ephemeral()
                .unwrap()
                .with_cached_keys(NonZeroUsize::new(room).unwrap());
            let keys = Keyring::new(Arc::new(provider));
            let table = MemoryStore::new();
            let subjects = ["ada", "grace", "edsger"];
            let mut first = HashMap::new();
            for subject in subjects {
                first.insert(
                    subject,
                    keys.key_for(&table, subject, None).await.unwrap().0,
                );
            }
            for subject in subjects {
                table.forget_subject(subject).await.unwrap();
            }
            let mut anew = 0;
            for subject in subjects {
                let (id, _) = keys.key_for(&table, subject, None).await.unwrap();
                anew += usize::from(id != first[subject]);
            }
            assert_eq!(anew, made_anew, "room for {room}");
        }
    }

    #[test]
    fn providers_keep_ten_thousand_keys_unless_told_otherwise() {
        let provider = LocalKeyProvider::ephemeral().unwrap();
        assert_eq!(provider.cached_keys(), crate::pii::DEFAULT_CACHED_KEYS);
        assert_eq!(crate::pii::DEFAULT_CACHED_KEYS.get(), 10_000);
    }
}
