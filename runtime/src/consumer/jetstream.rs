//! [`JetStreamSource`]: relayed events read from a JetStream stream, in the stream's order.

use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::pull::{Ordered, OrderedConfig};
use async_nats::jetstream::{self, ErrorCode};
use futures_util::{FutureExt as _, StreamExt as _};

use super::{Delivery, Receipt, Source, SourceError};
use crate::relay::inbound;

/// Reads a JetStream stream (the subjects matching a filter, e.g. `orders.Order.>`) through an
/// ordered consumer: no acknowledgements and no state on the server; the stream sequence of each
/// message is its position, and a consumer resumes after the one its target recorded. A
/// connection or server lost is retried by the [`Consumer`](super::Consumer), which starts
/// reading again after what the target committed.
pub struct JetStreamSource {
    context: jetstream::Context,
    stream: String,
    filter: String,
    messages: Option<Ordered>,
}

impl std::fmt::Debug for JetStreamSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamSource")
            .field("stream", &self.stream)
            .field("filter", &self.filter)
            .field("reading", &self.messages.is_some())
            .finish_non_exhaustive()
    }
}

impl JetStreamSource {
    /// A source reading the messages of the JetStream stream `stream` whose subjects match
    /// `filter` (`>` for all), with the connected `client`.
    pub fn new(client: async_nats::Client, stream: &str, filter: &str) -> Self {
        Self {
            context: jetstream::new(client),
            stream: stream.to_owned(),
            filter: filter.to_owned(),
            messages: None,
        }
    }

    fn lookup_error(&self, error: &jetstream::context::GetStreamError) -> SourceError {
        match error.kind() {
            jetstream::context::GetStreamErrorKind::JetStream(inner)
                if inner.error_code() == ErrorCode::STREAM_NOT_FOUND =>
            {
                SourceError::Invalid(format!(
                    "the JetStream stream `{}` does not exist: start the relay that publishes to it, or create it",
                    self.stream
                ))
            }
            _ => SourceError::Transient(format!(
                "could not look up JetStream stream `{}`: {error}",
                self.stream
            )),
        }
    }
}

impl Source for JetStreamSource {
    async fn resume(&mut self, position: Option<u64>) -> Result<(), SourceError> {
        self.messages = None;
        let stream = self
            .context
            .get_stream(&self.stream)
            .await
            .map_err(|error| self.lookup_error(&error))?;
        let deliver_policy = match position {
            Some(sequence) => DeliverPolicy::ByStartSequence {
                start_sequence: sequence.saturating_add(1),
            },
            None => DeliverPolicy::All,
        };
        let consumer = stream
            .create_consumer(OrderedConfig {
                filter_subject: self.filter.clone(),
                deliver_policy,
                ..OrderedConfig::default()
            })
            .await
            .map_err(|error| {
                SourceError::Transient(format!("could not create an ordered consumer: {error}"))
            })?;
        let messages = consumer.messages().await.map_err(|error| {
            SourceError::Transient(format!("could not read stream `{}`: {error}", self.stream))
        })?;
        self.messages = Some(messages);
        Ok(())
    }

    async fn next(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, SourceError> {
        let Some(messages) = self.messages.as_mut() else {
            return Err(SourceError::Transient("the source is not reading".into()));
        };
        let first = match tokio::time::timeout(wait, messages.next()).await {
            Err(_elapsed) => return Ok(Vec::new()),
            Ok(first) => first,
        };
        let mut deliveries = Vec::new();
        let mut next = first;
        loop {
            let message = match next {
                Some(Ok(message)) => message,
                Some(Err(error)) => {
                    // Delivered so far is kept (and applied); the rest is read again.
                    self.messages = None;
                    if deliveries.is_empty() {
                        return Err(SourceError::Transient(error.to_string()));
                    }
                    return Ok(deliveries);
                }
                None => {
                    self.messages = None;
                    if deliveries.is_empty() {
                        return Err(SourceError::Transient("the stream's reader ended".into()));
                    }
                    return Ok(deliveries);
                }
            };
            let sequence = message
                .info()
                .map_err(|error| {
                    SourceError::Transient(format!("a message without its sequence: {error}"))
                })?
                .stream_sequence;
            let at = || format!("{} #{sequence} on `{}`", self.stream, message.subject);
            let headers = message.headers.as_ref();
            let event = match inbound(
                |name| {
                    headers
                        .and_then(|h| h.get(name))
                        .map(|value| value.as_str())
                },
                &message.payload,
            ) {
                Ok(event) => event,
                // The messages before it are applied first; read again, it stops the consumer.
                Err(_) if !deliveries.is_empty() => {
                    self.messages = None;
                    return Ok(deliveries);
                }
                Err(cause) => return Err(SourceError::Undecodable { at: at(), cause }),
            };
            deliveries.push(Delivery {
                event,
                receipt: Receipt::new(Some(sequence), 0),
            });
            if deliveries.len() >= max {
                return Ok(deliveries);
            }
            match messages.next().now_or_never() {
                Some(item) => next = item,
                None => return Ok(deliveries),
            }
        }
    }

    async fn settle(&mut self, _last: Receipt) -> Result<(), SourceError> {
        // An ordered consumer takes no acknowledgements: the target's position is the record.
        Ok(())
    }
}
