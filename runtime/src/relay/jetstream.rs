//! [`JetStreamSink`]: a relay's sink publishing to NATS JetStream with `async-nats`.

use async_nats::jetstream::context::{Context, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, ErrorCode};
use async_nats::{HeaderMap, HeaderName};

use super::message::{Outbound, headers, parse_feed_position, subject_token};
use super::{Sink, SinkError};
use crate::position::FeedPosition;

/// Publishes to a JetStream stream on subjects `<prefix>.<aggregate type>.<event type>`, each
/// message with the event id as `Nats-Msg-Id`: JetStream drops a message published again within
/// the stream's de-duplication window (`duplicate_window`, two minutes by default), a window
/// that survives a server restart. A batch is sent whole, then its acknowledgements awaited in
/// order.
#[derive(Debug, Clone)]
pub struct JetStreamSink {
    client: async_nats::Client,
    context: Context,
    stream: String,
    prefix: String,
    /// The stream's `max_msg_size` when it has one (bytes; headers and payload; 0: none),
    /// read again by [`Sink::refresh`].
    max_message_size: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl JetStreamSink {
    /// A sink publishing to the existing JetStream stream `stream` (whose subjects must cover
    /// `<prefix>.>`) with the connected `client`.
    ///
    /// # Errors
    /// [`SinkError::Transient`] when the stream cannot be looked up now;
    /// [`SinkError::Permanent`] when it does not exist or does not take the prefix's subjects.
    pub async fn new(
        client: async_nats::Client,
        stream: &str,
        prefix: &str,
    ) -> Result<Self, SinkError> {
        let context = jetstream::new(client.clone());
        let mut handle = context.get_stream(stream).await.map_err(|error| {
            match error.kind() {
                jetstream::context::GetStreamErrorKind::JetStream(inner)
                    if inner.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                {
                    SinkError::Permanent(format!(
                        "the JetStream stream `{stream}` does not exist: create it with subjects `{prefix}.>`"
                    ))
                }
                _ => SinkError::Transient(format!("could not look up JetStream stream `{stream}`: {error}")),
            }
        })?;
        let info = handle
            .info()
            .await
            .map_err(|error| SinkError::Transient(format!("stream `{stream}`: {error}")))?;
        let wanted = format!("{prefix}.>");
        if !info.config.subjects.iter().any(|s| covers(s, &wanted)) {
            return Err(SinkError::Permanent(format!(
                "the JetStream stream `{stream}` takes subjects {:?}, not `{wanted}`: add it",
                info.config.subjects
            )));
        }
        Ok(Self {
            client,
            context,
            stream: stream.to_owned(),
            prefix: prefix.to_owned(),
            max_message_size: std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(
                stream_limit(&info.config),
            )),
        })
    }

    /// The subject of `message`: `<prefix>.<aggregate type>.<event type>`.
    #[must_use]
    pub fn subject(&self, message: &Outbound) -> String {
        format!(
            "{}.{}.{}",
            self.prefix,
            subject_token(&message.event.aggregate_type),
            subject_token(&message.event.event_type)
        )
    }

    /// The headers of `message`, built in one pass over the envelope, and their size as the
    /// server counts it (approximately: names, values and separators); or the header that holds
    /// a control character, which NATS headers cannot carry.
    fn headers(message: &Outbound) -> Result<(HeaderMap, usize), &'static str> {
        let mut map = HeaderMap::new();
        let mut size = 0;
        for (name, value) in message.headers() {
            if value.chars().any(char::is_control) {
                return Err(name);
            }
            size += name.len() + value.len() + 4;
            map.insert(HeaderName::from_static(name), value.into_owned());
        }
        Ok((map, size))
    }
}

/// A stream's `max_msg_size` in bytes (0: none).
fn stream_limit(config: &jetstream::stream::Config) -> usize {
    usize::try_from(config.max_message_size).unwrap_or(0)
}

/// Whether the stream subject `pattern` covers every subject of `wanted` (`<prefix>.>`).
fn covers(pattern: &str, wanted: &str) -> bool {
    if pattern == wanted || pattern == ">" {
        return true;
    }
    let mut p = pattern.split('.');
    let mut w = wanted.split('.');
    loop {
        match (p.next(), w.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(t)) if t != ">" => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

fn transient(error: impl std::fmt::Display) -> SinkError {
    SinkError::Transient(error.to_string())
}

/// A publish error: permanent when the message is too large for the server or the stream.
fn classify(error: &jetstream::context::PublishError) -> SinkError {
    let too_large = match error.kind() {
        PublishErrorKind::MaxPayloadExceeded => true,
        PublishErrorKind::Other => std::error::Error::source(error)
            .and_then(|source| source.downcast_ref::<jetstream::Error>())
            .is_some_and(|e| e.error_code() == ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM),
        _ => false,
    };
    if too_large {
        SinkError::Permanent(error.to_string())
    } else {
        transient(error)
    }
}

impl Sink for JetStreamSink {
    /// The subject and the message.
    type Message = (String, PublishMessage);

    fn prepare(&self, message: &Outbound) -> Result<Self::Message, String> {
        let (headers, header_size) = Self::headers(message).map_err(|header| {
            format!("header {header} holds a control character, which NATS headers cannot carry")
        })?;
        // The NATS/1.0 line, Nats-Msg-Id and the closing blank line.
        let size = message.payload().len() + header_size + 64;
        let server = self.client.max_payload();
        let limit = match self
            .max_message_size
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            0 => server,
            stream => stream.min(server),
        };
        if limit > 0 && size > limit {
            return Err(format!(
                "the message is {size} bytes; the JetStream stream `{}` takes at most {limit}",
                self.stream
            ));
        }
        let id = headers
            .get(headers::EVENT_ID)
            .map_or_else(|| message.event.event_id.to_string(), |id| id.to_string());
        let publish = PublishMessage::build()
            .payload(message.payload().to_owned().into())
            .headers(headers)
            .message_id(id);
        Ok((self.subject(message), publish))
    }

    async fn publish(&self, messages: Vec<Self::Message>) -> Vec<Result<(), SinkError>> {
        let mut acks = Vec::with_capacity(messages.len());
        let mut outcomes = Vec::with_capacity(1);
        for (subject, publish) in messages {
            match self.context.send_publish(subject, publish).await {
                Ok(ack) => acks.push(ack),
                Err(error) => {
                    outcomes.push(Err(classify(&error)));
                    break;
                }
            }
        }
        // The acknowledgements of what was sent, in order, then the refusal that stopped it.
        // The first that does not come (the connection dropped: each would wait out its own
        // timeout) ends the wait; the rest count as not sent, and are published again, which
        // the stream drops as duplicates of any it stored.
        let mut answered = Vec::with_capacity(acks.len() + 1);
        for ack in acks {
            match ack.await {
                Ok(_) => answered.push(Ok(())),
                Err(error) => match classify(&error) {
                    SinkError::Transient(reason) => {
                        answered.push(Err(SinkError::Transient(reason)));
                        return answered;
                    }
                    refusal => answered.push(Err(refusal)),
                },
            }
        }
        answered.extend(outcomes);
        answered
    }

    async fn refresh(&self) -> Result<(), SinkError> {
        let mut stream = self
            .context
            .get_stream(&self.stream)
            .await
            .map_err(transient)?;
        let info = stream.info().await.map_err(transient)?;
        self.max_message_size.store(
            stream_limit(&info.config),
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(())
    }

    async fn last_published(&self, relay: &str) -> Result<Option<FeedPosition>, SinkError> {
        let mut stream = self
            .context
            .get_stream(&self.stream)
            .await
            .map_err(transient)?;
        let last = stream.info().await.map_err(transient)?.state.last_sequence;
        // Walk back past other publishers' messages, a few at most.
        let first = last.saturating_sub(16).max(1);
        for sequence in (first..=last).rev() {
            let message = match stream.get_raw_message(sequence).await {
                Ok(message) => message,
                // Deleted or expired: look further back.
                Err(_) => continue,
            };
            let from_relay = message
                .headers
                .get(headers::RELAY)
                .is_some_and(|value| value.as_str() == relay);
            if from_relay {
                return Ok(message
                    .headers
                    .get(headers::FEED_POSITION)
                    .and_then(|value| parse_feed_position(value.as_str())));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::covers;

    #[test]
    fn stream_subjects_cover_the_prefix() {
        assert!(covers("events.>", "events.>"));
        assert!(covers(">", "events.>"));
        assert!(covers("*.>", "events.>"));
        assert!(!covers("events.*", "events.>"));
        assert!(!covers("other.>", "events.>"));
        assert!(covers("a.>", "a.b.>"));
    }
}
