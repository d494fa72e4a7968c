//! The message a relay publishes for one stored event: the stored payload as its body, the
//! envelope in headers.

use std::borrow::Cow;
use std::sync::Arc;

use crate::envelope::RecordedEvent;
use crate::position::FeedPosition;

/// The header names a relay sets on every message (besides the broker's own de-duplication
/// header, which carries the event id).
pub mod headers {
    /// The event id (a UUID).
    pub const EVENT_ID: &str = "Factum-Event-Id";
    /// The event's stable type name.
    pub const EVENT_TYPE: &str = "Factum-Event-Type";
    /// The schema version the payload was written with.
    pub const SCHEMA_VERSION: &str = "Factum-Schema-Version";
    /// The stream (aggregate instance) id.
    pub const STREAM_ID: &str = "Factum-Stream-Id";
    /// The event's version in its stream.
    pub const STREAM_VERSION: &str = "Factum-Stream-Version";
    /// The aggregate type owning the stream.
    pub const AGGREGATE_TYPE: &str = "Factum-Aggregate-Type";
    /// The correlation id (a UUID).
    pub const CORRELATION_ID: &str = "Factum-Correlation-Id";
    /// The causation id (a UUID).
    pub const CAUSATION_ID: &str = "Factum-Causation-Id";
    /// When the event was recorded (RFC 3339).
    pub const RECORDED_AT: &str = "Factum-Recorded-At";
    /// Who caused it, when known.
    pub const ACTOR: &str = "Factum-Actor";
    /// The tenant it belongs to, when the store keeps tenants.
    pub const TENANT: &str = "Factum-Tenant";
    /// The event's place in the global feed, `<tx>:<position>`.
    pub const FEED_POSITION: &str = "Factum-Feed-Position";
    /// The relay that published it.
    pub const RELAY: &str = "Factum-Relay";
    /// The W3C trace context of the command that appended the event, when it was traced
    /// (metadata [`TRACEPARENT`](crate::trace::TRACEPARENT)): the message's creation context,
    /// which a consumer's handling continues.
    pub const TRACEPARENT: &str = "traceparent";
}

/// One event as a relay hands it to a [`Sink`](super::Sink): the stored event (its payload is
/// the message's body) and the relay publishing it. Sinks build their headers from
/// [`Outbound::headers`], without copying what the event already holds.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Outbound {
    /// The stored event.
    pub event: RecordedEvent,
    /// The relay publishing it.
    pub relay: Arc<str>,
}

impl Outbound {
    /// The message for `event`, published by the relay `relay`.
    #[must_use]
    pub fn new(event: RecordedEvent, relay: Arc<str>) -> Self {
        Self { event, relay }
    }

    /// The envelope, as header names ([`headers`]) and values.
    pub fn headers(&self) -> impl Iterator<Item = (&'static str, Cow<'_, str>)> + '_ {
        let event = &self.event;
        let position = event.feed_position();
        [
            (headers::EVENT_ID, Cow::Owned(event.event_id.to_string())),
            (
                headers::EVENT_TYPE,
                Cow::Borrowed(event.event_type.as_str()),
            ),
            (
                headers::SCHEMA_VERSION,
                Cow::Owned(event.schema_version.to_string()),
            ),
            (headers::STREAM_ID, Cow::Borrowed(event.stream_id.as_str())),
            (
                headers::STREAM_VERSION,
                Cow::Owned(event.stream_version.to_string()),
            ),
            (
                headers::AGGREGATE_TYPE,
                Cow::Borrowed(event.aggregate_type.as_str()),
            ),
            (
                headers::CORRELATION_ID,
                Cow::Owned(event.correlation_id.to_string()),
            ),
            (
                headers::CAUSATION_ID,
                Cow::Owned(event.causation_id.to_string()),
            ),
            (
                headers::RECORDED_AT,
                Cow::Owned(event.recorded_at.to_rfc3339()),
            ),
            (
                headers::FEED_POSITION,
                Cow::Owned(format!("{}:{}", position.tx, position.position)),
            ),
            (headers::RELAY, Cow::Borrowed(&*self.relay)),
        ]
        .into_iter()
        .chain(
            event
                .actor
                .as_deref()
                .map(|actor| (headers::ACTOR, Cow::Borrowed(actor))),
        )
        .chain(
            event
                .tenant
                .as_deref()
                .map(|tenant| (headers::TENANT, Cow::Borrowed(tenant))),
        )
        .chain(
            event
                .metadata
                .get(crate::trace::TRACEPARENT)
                .and_then(serde_json::Value::as_str)
                .map(|traceparent| (headers::TRACEPARENT, Cow::Borrowed(traceparent))),
        )
    }

    /// The body: the stored payload (JSON), byte for byte.
    #[must_use]
    pub fn payload(&self) -> &str {
        self.event.event.as_str()
    }

    /// A header value that a broker's protocol cannot carry (a line break or another control
    /// character), if any: its name.
    #[must_use]
    pub fn unsendable_header(&self) -> Option<&'static str> {
        self.headers()
            .find(|(_, value)| value.chars().any(char::is_control))
            .map(|(name, _)| name)
    }
}

/// Why a broker message is not a relayed event: what a consumer reports instead of applying
/// it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InboundError {
    /// A header every relayed message carries is missing (the message was not published by a
    /// Factum relay, or a proxy dropped its headers).
    #[error("header {0} is missing: the message was not published by a Factum relay")]
    MissingHeader(&'static str),
    /// A header does not read as what it carries.
    #[error("header {name} holds `{value}`, which is not {expected}")]
    InvalidHeader {
        /// The header.
        name: &'static str,
        /// Its value.
        value: String,
        /// What it should hold.
        expected: &'static str,
    },
    /// The body is not the JSON payload of an event.
    #[error("the body is not a JSON event payload: {0}")]
    Payload(String),
}

/// The stored event a relay's message carries, read back from its headers (looked up by name
/// with `header`) and its body. The envelope's metadata is not relayed, but for the trace
/// context ([`headers::TRACEPARENT`]), which the consumer's handling continues.
///
/// # Errors
/// [`InboundError`] naming the header or body that does not read.
pub fn inbound<'h>(
    header: impl Fn(&'static str) -> Option<&'h str>,
    body: &[u8],
) -> Result<RecordedEvent, InboundError> {
    let text = |name: &'static str| header(name).ok_or(InboundError::MissingHeader(name));
    fn parsed<T: std::str::FromStr>(
        name: &'static str,
        value: &str,
        expected: &'static str,
    ) -> Result<T, InboundError> {
        value.parse().map_err(|_| InboundError::InvalidHeader {
            name,
            value: value.to_owned(),
            expected,
        })
    }
    let uuid = |name| parsed::<uuid::Uuid>(name, text(name)?, "a UUID");
    let position = text(headers::FEED_POSITION)?;
    let feed = parse_feed_position(position).ok_or_else(|| InboundError::InvalidHeader {
        name: headers::FEED_POSITION,
        value: position.to_owned(),
        expected: "a feed position `<tx>:<position>`",
    })?;
    let recorded_at = text(headers::RECORDED_AT)?;
    let recorded_at = chrono::DateTime::parse_from_rfc3339(recorded_at)
        .map_err(|_| InboundError::InvalidHeader {
            name: headers::RECORDED_AT,
            value: recorded_at.to_owned(),
            expected: "an RFC 3339 time",
        })?
        .with_timezone(&chrono::Utc);
    let body = std::str::from_utf8(body).map_err(|e| InboundError::Payload(e.to_string()))?;
    let event = crate::event::Payload::from_json(body.to_owned())
        .map_err(|e| InboundError::Payload(e.to_string()))?;
    Ok(RecordedEvent {
        event_id: uuid(headers::EVENT_ID)?,
        event_type: text(headers::EVENT_TYPE)?.to_owned(),
        schema_version: parsed(
            headers::SCHEMA_VERSION,
            text(headers::SCHEMA_VERSION)?,
            "a schema version",
        )?,
        stream_id: text(headers::STREAM_ID)?.to_owned(),
        aggregate_type: text(headers::AGGREGATE_TYPE)?.to_owned(),
        stream_version: parsed(
            headers::STREAM_VERSION,
            text(headers::STREAM_VERSION)?,
            "a stream version",
        )?,
        global_position: feed.position,
        tx: feed.tx,
        recorded_at,
        correlation_id: uuid(headers::CORRELATION_ID)?,
        causation_id: uuid(headers::CAUSATION_ID)?,
        actor: header(headers::ACTOR).map(str::to_owned),
        metadata: header(headers::TRACEPARENT)
            .map(|traceparent| {
                crate::envelope::Metadata::from_iter([(
                    crate::trace::TRACEPARENT.to_owned(),
                    serde_json::Value::from(traceparent),
                )])
            })
            .unwrap_or_default(),
        shredded: false,
        data_key: None,
        tenant: header(headers::TENANT).map(str::to_owned),
        event,
    })
}

/// Parses a [`headers::FEED_POSITION`] value.
#[must_use]
pub fn parse_feed_position(value: &str) -> Option<FeedPosition> {
    let (tx, position) = value.split_once(':')?;
    Some(FeedPosition {
        tx: tx.parse().ok()?,
        position: position.parse().ok()?,
    })
}

/// `token` as one token of a subject or routing key: the separators and wildcards of NATS
/// subjects and AMQP topic keys (`.`, `*`, `>`, `#`) and white space become `_` (borrowed
/// when there are none, as for event and aggregate type names).
#[must_use]
pub fn subject_token(token: &str) -> Cow<'_, str> {
    let special =
        |c: char| matches!(c, '.' | '*' | '>' | '#') || c.is_whitespace() || c.is_control();
    if token.is_empty() {
        Cow::Borrowed("_")
    } else if token.chars().any(special) {
        Cow::Owned(
            token
                .chars()
                .map(|c| if special(c) { '_' } else { c })
                .collect(),
        )
    } else {
        Cow::Borrowed(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_never_split_or_match_subjects() {
        assert_eq!(subject_token("BankAccount"), "BankAccount");
        assert_eq!(subject_token("a.b *>#\tc"), "a_b_____c");
        assert_eq!(subject_token(""), "_");
    }

    #[test]
    fn a_message_reads_back_as_the_event_it_carries() {
        let event = crate::envelope::Envelope {
            event_id: uuid::Uuid::now_v7(),
            event_type: "OrderPlaced".into(),
            schema_version: 2,
            stream_id: "order-1".into(),
            aggregate_type: "Order".into(),
            stream_version: 7,
            global_position: 42,
            tx: 41,
            recorded_at: chrono::Utc::now(),
            correlation_id: uuid::Uuid::now_v7(),
            causation_id: uuid::Uuid::now_v7(),
            actor: Some("alice".into()),
            metadata: crate::envelope::Metadata::new(),
            shredded: false,
            data_key: None,
            tenant: Some("acme".into()),
            event: crate::event::Payload::from_json(r#"{"total":5}"#.into()).unwrap(),
        };
        let message = Outbound::new(event.clone(), "orders".into());
        let headers: Vec<(&str, String)> = message
            .headers()
            .map(|(name, value)| (name, value.into_owned()))
            .collect();
        let lookup = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(lookup(headers::TENANT), Some("acme"));
        let back = inbound(lookup, message.payload().as_bytes()).unwrap();
        assert_eq!(back, event);

        let without_type = |name: &str| {
            (name != headers::EVENT_TYPE)
                .then(|| lookup(name))
                .flatten()
        };
        assert_eq!(
            inbound(without_type, b"{}"),
            Err(InboundError::MissingHeader(headers::EVENT_TYPE))
        );
        let bad_version = |name: &str| {
            if name == headers::STREAM_VERSION {
                Some("seven")
            } else {
                lookup(name)
            }
        };
        assert!(matches!(
            inbound(bad_version, b"{}"),
            Err(InboundError::InvalidHeader {
                name: headers::STREAM_VERSION,
                ..
            })
        ));
        assert!(matches!(
            inbound(lookup, b"{not json"),
            Err(InboundError::Payload(_))
        ));
    }

    #[test]
    fn a_feed_position_header_round_trips() {
        let position = FeedPosition {
            tx: 42,
            position: 7,
        };
        let value = format!("{}:{}", position.tx, position.position);
        assert_eq!(parse_feed_position(&value), Some(position));
        assert_eq!(parse_feed_position("42"), None);
        assert_eq!(parse_feed_position("x:1"), None);
    }
}
