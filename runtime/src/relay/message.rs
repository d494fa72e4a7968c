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
    /// The event's place in the global feed, `<tx>:<position>`.
    pub const FEED_POSITION: &str = "Factum-Feed-Position";
    /// The relay that published it.
    pub const RELAY: &str = "Factum-Relay";
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
