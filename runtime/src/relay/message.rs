//! The message a relay publishes for one stored event: the stored payload as its body, the
//! envelope in headers.

use uuid::Uuid;

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

/// One event as a relay hands it to a [`Sink`](super::Sink).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Outbound {
    /// The event id: the broker's de-duplication id.
    pub event_id: Uuid,
    /// The aggregate type (a subject or routing key's second token).
    pub aggregate_type: String,
    /// The event type (a subject or routing key's third token).
    pub event_type: String,
    /// The stream the event belongs to.
    pub stream_id: String,
    /// Its version in the stream.
    pub stream_version: u64,
    /// Its place in the global feed.
    pub feed_position: FeedPosition,
    /// The envelope, as header name and value pairs ([`headers`]).
    pub headers: Vec<(&'static str, String)>,
    /// The stored payload (JSON), byte for byte.
    pub payload: String,
}

impl Outbound {
    /// The message for `event`, published by the relay `relay`.
    #[must_use]
    pub fn of(event: &RecordedEvent, relay: &str) -> Self {
        let position = event.feed_position();
        let mut fields = vec![
            (headers::EVENT_ID, event.event_id.to_string()),
            (headers::EVENT_TYPE, event.event_type.clone()),
            (headers::SCHEMA_VERSION, event.schema_version.to_string()),
            (headers::STREAM_ID, event.stream_id.clone()),
            (headers::STREAM_VERSION, event.stream_version.to_string()),
            (headers::AGGREGATE_TYPE, event.aggregate_type.clone()),
            (headers::CORRELATION_ID, event.correlation_id.to_string()),
            (headers::CAUSATION_ID, event.causation_id.to_string()),
            (headers::RECORDED_AT, event.recorded_at.to_rfc3339()),
            (
                headers::FEED_POSITION,
                format!("{}:{}", position.tx, position.position),
            ),
            (headers::RELAY, relay.to_owned()),
        ];
        if let Some(actor) = &event.actor {
            fields.push((headers::ACTOR, actor.clone()));
        }
        Self {
            event_id: event.event_id,
            aggregate_type: event.aggregate_type.clone(),
            event_type: event.event_type.clone(),
            stream_id: event.stream_id.clone(),
            stream_version: event.stream_version,
            feed_position: position,
            headers: fields,
            payload: event.event.as_str().to_owned(),
        }
    }

    /// A header value that a broker's protocol cannot carry (a line break or another control
    /// character), if any: its name.
    #[must_use]
    pub fn unsendable_header(&self) -> Option<&'static str> {
        self.headers
            .iter()
            .find(|(_, value)| value.chars().any(char::is_control))
            .map(|(name, _)| *name)
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
/// subjects and AMQP topic keys (`.`, `*`, `>`, `#`) and white space become `_`.
#[must_use]
pub fn subject_token(token: &str) -> String {
    let cleaned: String = token
        .chars()
        .map(|c| {
            if matches!(c, '.' | '*' | '>' | '#') || c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if cleaned.is_empty() {
        "_".to_owned()
    } else {
        cleaned
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
