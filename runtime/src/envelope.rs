//! The envelope every stored event carries, and the shape of an event about to be appended.

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::event::{Event, EventSet, Payload};
use crate::pii::PiiSpec;
use crate::position::FeedPosition;

/// Free-form metadata stored with an event (tenant, request path, client version...).
pub type Metadata = BTreeMap<String, serde_json::Value>;

/// A stored event with everything known about it. `E` is the event: the raw [`Payload`] as read
/// from a store, or a decoded event set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Envelope<E = Payload> {
    /// Unique id of the event (UUIDv7, so ids sort by creation time).
    pub event_id: Uuid,
    /// The event's stable type name.
    pub event_type: String,
    /// The schema version the payload was written with.
    pub schema_version: u32,
    /// The stream (aggregate instance) the event belongs to.
    pub stream_id: String,
    /// The aggregate type owning the stream.
    pub aggregate_type: String,
    /// Position in its stream: 1 for the first event.
    pub stream_version: u64,
    /// Position in the store's global log, unique and increasing in allocation order.
    pub global_position: u64,
    /// The store's commit-order key: the global feed delivers events in `(tx, global_position)`
    /// order. In PostgreSQL it is the id of the writing transaction; in the other stores, a
    /// counter of appends.
    pub tx: u64,
    /// When the store recorded the event.
    pub recorded_at: DateTime<Utc>,
    /// The id shared by every message of one business flow (the first command's id by default).
    pub correlation_id: Uuid,
    /// The id of the message that directly caused this event: the command's id.
    pub causation_id: Uuid,
    /// Who issued the command, if known.
    pub actor: Option<String>,
    /// Free-form metadata.
    pub metadata: Metadata,
    /// Whether personal data of the event was forgotten (its data subject's key deleted): its
    /// `#[pii]` fields read as their replacements (see [`crate::pii`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shredded: bool,
    /// The id of the data key its personal data is sealed under (its data subject's), if it
    /// has any: what a reader keeps beside what it derives from the event, so that forgetting
    /// the subject finds it (see [`crate::pii`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_key: Option<Uuid>,
    /// The tenant the event belongs to, if the store keeps tenants (see
    /// [`PostgresStore::for_tenant`](crate::store::PostgresStore::for_tenant) and
    /// [`SqliteStore::for_tenant`](crate::store::SqliteStore::for_tenant)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The event itself.
    pub event: E,
}

/// A stored event as read from a store, payload not yet decoded.
pub type RecordedEvent = Envelope<Payload>;

/// Which fields of the [`Envelope`]s it reads a reader needs, so that a store reads no more
/// columns than that: every column a row holds costs the database and the reader alike, and
/// catching a projection up reads every event once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnvelopeFields {
    /// Every field.
    #[default]
    All,
    /// The fields of a [`Source`]: the stream, the event type and schema version, the feed
    /// position and the payload. Every other field is left out, and such an envelope holds
    /// placeholders in their place: a nil event id, no aggregate type, stream version 0, the
    /// Unix epoch as recording time, and as for [`EnvelopeFields::Origin`].
    Source,
    /// The fields of an [`Origin`]: ids, stream, versions, positions, recording time, event
    /// type and payload. The metadata, the correlation and causation ids and the actor are not
    /// read: a store may leave them out, and such an envelope then holds empty metadata, nil
    /// ids and no actor in their place.
    Origin,
}

/// Where an event comes from and what it is, without its metadata, correlation, causation or
/// actor: what a projection handler taking `origin: &Origin<'_>` instead of
/// `envelope: &Envelope` sees, so that its runner reads only these columns
/// ([`EnvelopeFields::Origin`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Origin<'a> {
    /// Unique id of the event (the idempotency key of a side effect).
    pub event_id: Uuid,
    /// The event's stable type name.
    pub event_type: &'a str,
    /// The schema version the payload was written with.
    pub schema_version: u32,
    /// The stream (aggregate instance) the event belongs to.
    pub stream_id: &'a str,
    /// The aggregate type owning the stream.
    pub aggregate_type: &'a str,
    /// Position in its stream: 1 for the first event.
    pub stream_version: u64,
    /// Position in the store's global log.
    pub global_position: u64,
    /// The store's commit-order key (see [`Envelope::tx`]).
    pub tx: u64,
    /// When the store recorded the event.
    pub recorded_at: DateTime<Utc>,
}

/// Which stream an event belongs to, what it is and where it stands in the global feed: what a
/// projection handler taking `source: &Source<'_>` sees, so that its runner reads only these
/// columns ([`EnvelopeFields::Source`]), the least a batch of the feed can be read with. A
/// handler that also needs the event's id, stream version or recording time takes
/// [`Origin`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Source<'a> {
    /// The stream (aggregate instance) the event belongs to.
    pub stream_id: &'a str,
    /// The event's stable type name.
    pub event_type: &'a str,
    /// The schema version the payload was written with.
    pub schema_version: u32,
    /// Position in the store's global log.
    pub global_position: u64,
    /// The store's commit-order key (see [`Envelope::tx`]).
    pub tx: u64,
}

impl<'a> Source<'a> {
    /// A stored event read with [`EnvelopeFields::Source`]: the fields left out hold their
    /// placeholders.
    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    pub(crate) fn into_envelope(self, payload: Payload) -> RecordedEvent {
        self.origin().into_envelope(payload)
    }

    /// Like [`Source::into_envelope`], but into `envelope` ([`Origin::refill`]).
    #[cfg(feature = "postgres")]
    pub(crate) fn refill(self, envelope: &mut RecordedEvent, payload: &str) {
        self.origin().refill(envelope, payload);
    }

    /// The origin a [`Source`] read stands for: the fields left out hold their placeholders.
    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    fn origin(self) -> Origin<'a> {
        Origin {
            event_id: Uuid::nil(),
            event_type: self.event_type,
            schema_version: self.schema_version,
            stream_id: self.stream_id,
            aggregate_type: "",
            stream_version: 0,
            global_position: self.global_position,
            tx: self.tx,
            recorded_at: DateTime::UNIX_EPOCH,
        }
    }

    /// Where this event stands in the global feed.
    #[must_use]
    pub fn feed_position(&self) -> FeedPosition {
        FeedPosition::new(self.tx, self.global_position)
    }
}

impl EnvelopeFields {
    /// These fields, and at least those of an [`Origin`].
    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    #[must_use]
    pub(crate) fn with_origin(self) -> Self {
        match self {
            Self::Source => Self::Origin,
            other => other,
        }
    }
}

impl Origin<'_> {
    /// A stored event read with [`EnvelopeFields::Origin`]: the fields left out hold their
    /// placeholders (empty metadata, nil ids, no actor).
    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    pub(crate) fn into_envelope(self, payload: Payload) -> RecordedEvent {
        Envelope {
            event_id: self.event_id,
            event_type: self.event_type.to_owned(),
            schema_version: self.schema_version,
            stream_id: self.stream_id.to_owned(),
            aggregate_type: self.aggregate_type.to_owned(),
            stream_version: self.stream_version,
            global_position: self.global_position,
            tx: self.tx,
            recorded_at: self.recorded_at,
            correlation_id: Uuid::nil(),
            causation_id: Uuid::nil(),
            actor: None,
            metadata: Metadata::new(),
            shredded: false,
            data_key: None,
            tenant: None,
            event: payload,
        }
    }

    /// Like [`Origin::into_envelope`], but into `envelope`, in the room its strings already
    /// have: a runner's batch envelopes are filled again batch after batch, so that a long
    /// catch-up does not allocate and free each event's strings. Every field is written (the
    /// destructuring names them all: a field added to [`Envelope`] must be written here too).
    #[cfg(feature = "postgres")]
    pub(crate) fn refill(self, envelope: &mut RecordedEvent, payload: &str) {
        let Envelope {
            event_id,
            event_type,
            schema_version,
            stream_id,
            aggregate_type,
            stream_version,
            global_position,
            tx,
            recorded_at,
            correlation_id,
            causation_id,
            actor,
            metadata,
            shredded,
            data_key,
            tenant,
            event,
        } = envelope;
        *event_id = self.event_id;
        refill_text(event_type, self.event_type);
        *schema_version = self.schema_version;
        refill_text(stream_id, self.stream_id);
        refill_text(aggregate_type, self.aggregate_type);
        *stream_version = self.stream_version;
        *global_position = self.global_position;
        *tx = self.tx;
        *recorded_at = self.recorded_at;
        *correlation_id = Uuid::nil();
        *causation_id = Uuid::nil();
        *actor = None;
        metadata.clear();
        *shredded = false;
        *data_key = None;
        *tenant = None;
        event.set_stored_json(payload);
    }

    /// Where this event stands in the global feed.
    #[must_use]
    pub fn feed_position(&self) -> FeedPosition {
        FeedPosition::new(self.tx, self.global_position)
    }
}

/// Replaces `text` with `with`, in the room it has.
#[cfg(feature = "postgres")]
fn refill_text(text: &mut String, with: &str) {
    text.clear();
    text.push_str(with);
}

impl<E> Envelope<E> {
    /// Where this event stands in the global feed; a reader that has processed it checkpoints
    /// this position.
    #[must_use]
    pub fn feed_position(&self) -> FeedPosition {
        FeedPosition::new(self.tx, self.global_position)
    }

    /// Where the event comes from and what it is, borrowed.
    #[must_use]
    pub fn origin(&self) -> Origin<'_> {
        Origin {
            event_id: self.event_id,
            event_type: &self.event_type,
            schema_version: self.schema_version,
            stream_id: &self.stream_id,
            aggregate_type: &self.aggregate_type,
            stream_version: self.stream_version,
            global_position: self.global_position,
            tx: self.tx,
            recorded_at: self.recorded_at,
        }
    }

    /// Which stream the event belongs to and where it stands, borrowed.
    #[must_use]
    pub fn source(&self) -> Source<'_> {
        Source {
            stream_id: &self.stream_id,
            event_type: &self.event_type,
            schema_version: self.schema_version,
            global_position: self.global_position,
            tx: self.tx,
        }
    }

    /// The same envelope around another event value.
    pub fn with_event<F>(self, event: F) -> Envelope<F> {
        Envelope {
            event_id: self.event_id,
            event_type: self.event_type,
            schema_version: self.schema_version,
            stream_id: self.stream_id,
            aggregate_type: self.aggregate_type,
            stream_version: self.stream_version,
            global_position: self.global_position,
            tx: self.tx,
            recorded_at: self.recorded_at,
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            actor: self.actor,
            metadata: self.metadata,
            shredded: self.shredded,
            data_key: self.data_key,
            tenant: self.tenant,
            event,
        }
    }
}

impl Envelope<Payload> {
    /// Decodes the payload into the event set `S`: one event, or as many as upcasting an old
    /// version makes of it.
    ///
    /// # Errors
    /// [`Error::Decode`] naming the stream, version, type and what does not match.
    pub fn decode_events<S: EventSet>(&self) -> Result<Vec<S>> {
        S::decode_all(&self.event_type, self.schema_version, self.event.as_str()).map_err(|cause| {
            Error::Decode {
                stream_id: self.stream_id.clone(),
                stream_version: self.stream_version,
                cause,
            }
        })
    }

    /// Decodes the payload into the event set `S`, each resulting event in a copy of the
    /// envelope.
    ///
    /// # Errors
    /// As [`Envelope::decode_events`].
    pub fn decode<S: EventSet>(self) -> Result<Vec<Envelope<S>>> {
        let events = self.decode_events::<S>()?;
        let mut envelopes = Vec::with_capacity(events.len());
        let mut events = events.into_iter().peekable();
        while let Some(event) = events.next() {
            if events.peek().is_some() {
                envelopes.push(self.clone().with_event(event));
            } else {
                envelopes.push(self.with_event(event));
                break;
            }
        }
        Ok(envelopes)
    }
}

/// An event about to be appended: what the writer decides. The store adds the stream, versions,
/// positions and time.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct NewEvent {
    /// Unique id; a retried append must reuse it so that the store recognises the retry.
    pub event_id: Uuid,
    /// The event's stable type name.
    pub event_type: Cow<'static, str>,
    /// The schema version of the payload.
    pub schema_version: u32,
    /// The event's JSON.
    pub payload: Payload,
    /// See [`Envelope::correlation_id`].
    pub correlation_id: Uuid,
    /// See [`Envelope::causation_id`].
    pub causation_id: Uuid,
    /// See [`Envelope::actor`].
    pub actor: Option<String>,
    /// See [`Envelope::metadata`].
    pub metadata: Metadata,
    /// Appended by [`Repository::execute_once`](crate::Repository::execute_once), whose event
    /// ids derive from the command id: an id already stored is another delivery's doing, never
    /// a retry of this append, so the store reports it ([`crate::Error::DuplicateEventId`])
    /// instead of recognising a retry.
    pub(crate) once: bool,
    /// The event type's personal-data fields ([`Event::PII`]), which the store encrypts.
    pub(crate) pii: Option<&'static PiiSpec>,
    /// The event type's declared size limit ([`Event::MAX_SIZE`]), checked on append.
    pub(crate) max_size: Option<usize>,
    /// Its personal data sealed, when the store keeps that in a column of its own
    /// ([`crate::pii::Placement::Column`]); the store sets it as it seals the payload.
    pub(crate) sealed: Option<Vec<u8>>,
}

impl NewEvent {
    /// A new event with a fresh UUIDv7 id that is its own correlation and causation id.
    #[must_use]
    pub fn new(
        event_type: impl Into<Cow<'static, str>>,
        schema_version: u32,
        payload: Payload,
    ) -> Self {
        let event_id = Uuid::now_v7();
        Self {
            event_id,
            event_type: event_type.into(),
            schema_version,
            payload,
            correlation_id: event_id,
            causation_id: event_id,
            actor: None,
            metadata: Metadata::new(),
            once: false,
            pii: None,
            max_size: None,
            sealed: None,
        }
    }

    /// A new event encoded from `event`, under its type's name and schema version (a fresh
    /// UUIDv7 id that is its own correlation and causation id), so a raw append of a typed
    /// event repeats neither.
    ///
    /// ```
    /// # #[factum::event] #[derive(Debug)] pub struct Ticked { pub n: u64 }
    /// let event = factum::NewEvent::of(&Ticked { n: 1 })?;
    /// assert_eq!((event.event_type.as_ref(), event.schema_version), ("Ticked", 1));
    /// # Ok::<_, factum::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Encode`] when the event does not serialize.
    pub fn of<E: Event>(event: &E) -> Result<Self> {
        let payload = Payload::encode(event).map_err(|cause| Error::Encode {
            event_type: E::NAME,
            cause,
        })?;
        let mut event = Self::new(E::NAME, E::VERSION, payload);
        event.pii = E::PII;
        event.max_size = E::MAX_SIZE;
        Ok(event)
    }

    /// The envelope of this event as a store recorded it: in `stream` (its id and aggregate
    /// type) at `stream_version`, at `position` (`tx`, global position) in the feed, at
    /// `recorded_at`; in plain, for no tenant (a store that keeps tenants sets its own).
    pub(crate) fn into_recorded(
        self,
        (stream_id, aggregate_type): (&str, &str),
        stream_version: u64,
        (tx, global_position): (u64, u64),
        recorded_at: DateTime<Utc>,
    ) -> RecordedEvent {
        Envelope {
            event_id: self.event_id,
            event_type: self.event_type.into_owned(),
            schema_version: self.schema_version,
            stream_id: stream_id.to_owned(),
            aggregate_type: aggregate_type.to_owned(),
            stream_version,
            global_position,
            tx,
            recorded_at,
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            actor: self.actor,
            metadata: self.metadata,
            shredded: false,
            data_key: None,
            tenant: None,
            event: self.payload,
        }
    }

    /// Sets the event id.
    #[must_use]
    pub fn event_id(mut self, event_id: Uuid) -> Self {
        self.event_id = event_id;
        self
    }

    /// Sets the correlation id.
    #[must_use]
    pub fn correlation_id(mut self, correlation_id: Uuid) -> Self {
        self.correlation_id = correlation_id;
        self
    }

    /// Sets the causation id.
    #[must_use]
    pub fn causation_id(mut self, causation_id: Uuid) -> Self {
        self.causation_id = causation_id;
        self
    }

    /// Sets the actor.
    #[must_use]
    pub fn actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    /// Adds one metadata entry.
    #[must_use]
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }
}

#[cfg(all(test, feature = "postgres"))]
mod tests {
    use super::*;

    /// An envelope of an earlier batch with every field set, as an `All` read leaves it.
    fn full_envelope() -> RecordedEvent {
        let mut event = Origin {
            event_id: Uuid::now_v7(),
            event_type: "AccountOpenedWithAVeryLongTypeName",
            schema_version: 3,
            stream_id: "account-with-a-long-stream-id-0001",
            aggregate_type: "BankAccount",
            stream_version: 41,
            global_position: 900,
            tx: 77,
            recorded_at: Utc::now(),
        }
        .into_envelope(Payload::from_stored_json(
            r#"{"owner":"someone whose name is long","initial_deposit":100}"#.to_owned(),
        ));
        event.correlation_id = Uuid::now_v7();
        event.causation_id = Uuid::now_v7();
        event.actor = Some("clerk".to_owned());
        event
            .metadata
            .insert("request".to_owned(), serde_json::json!("/open"));
        event.shredded = true;
        event.data_key = Some(Uuid::now_v7());
        event.tenant = Some("tenant-a".to_owned());
        event
    }

    #[test]
    fn a_refilled_envelope_keeps_nothing_of_the_event_before() {
        let source = Source {
            stream_id: "acc-2",
            event_type: "MoneyDeposited",
            schema_version: 1,
            global_position: 901,
            tx: 78,
        };
        let payload = r#"{"amount":5}"#;
        let mut envelope = full_envelope();
        let room = envelope.stream_id.as_ptr();
        source.refill(&mut envelope, payload);
        let fresh = source.into_envelope(Payload::from_stored_json(payload.to_owned()));
        assert_eq!(envelope, fresh);
        assert_eq!(envelope.event.as_str(), payload);
        // The stream id went into the room the longer one had.
        assert_eq!(envelope.stream_id.as_ptr(), room);

        let other = full_envelope();
        let origin = other.origin();
        let mut envelope = full_envelope();
        origin.refill(&mut envelope, "{}");
        assert_eq!(
            envelope,
            origin.into_envelope(Payload::from_stored_json("{}".to_owned()))
        );
        assert!(!envelope.shredded && envelope.tenant.is_none() && envelope.metadata.is_empty());
    }
}
