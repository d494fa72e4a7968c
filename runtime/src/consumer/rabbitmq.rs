//! [`RabbitMqSource`]: relayed events read from a RabbitMQ queue bound to a relay's exchange.

use std::time::Duration;

use futures_util::{FutureExt as _, StreamExt as _};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Connection, ConnectionProperties};

use super::{Delivery, Receipt, Source, SourceError};
use crate::relay::inbound;

/// Reads a durable queue of the service's own, declared and bound to the relay's exchange with
/// a routing pattern (`orders.Order.#`) when the source starts. One exclusive consumer reads it,
/// so messages come in the queue's order; a message is acknowledged (with those before it) only
/// after the target committed it, and what was delivered but not acknowledged when a
/// connection dropped is delivered again, which the target recognises and skips.
#[derive(Debug)]
pub struct RabbitMqSource {
    url: String,
    queue: String,
    bindings: Vec<(String, String)>,
    prefetch: u16,
    reading: Option<Reading>,
}

#[derive(Debug)]
struct Reading {
    /// Open while reading: closing it requeues what was not acknowledged.
    connection: Connection,
    channel: Channel,
    consumer: lapin::Consumer,
}

fn invalid_name(what: &str, name: &str) -> SourceError {
    SourceError::Invalid(format!("{what} `{name}` is longer than AMQP's 255 bytes"))
}

fn short(what: &str, name: &str) -> Result<ShortString, SourceError> {
    ShortString::try_new(name).map_err(|_| invalid_name(what, name))
}

fn transient(error: impl std::fmt::Display) -> SourceError {
    SourceError::Transient(error.to_string())
}

impl RabbitMqSource {
    /// A source reading the queue `queue` of the broker at `url`.
    pub fn new(url: &str, queue: &str) -> Self {
        Self {
            url: url.to_owned(),
            queue: queue.to_owned(),
            bindings: Vec::new(),
            prefetch: 512,
            reading: None,
        }
    }

    /// Binds the queue to `exchange` with the routing pattern `pattern` (`orders.Order.#`;
    /// declaring the exchange as a durable topic exchange when it does not exist yet).
    #[must_use]
    pub fn bind(mut self, exchange: &str, pattern: &str) -> Self {
        self.bindings
            .push((exchange.to_owned(), pattern.to_owned()));
        self
    }

    /// Messages delivered ahead of acknowledgements (512 by default).
    #[must_use]
    pub fn prefetch(mut self, messages: u16) -> Self {
        self.prefetch = messages.max(1);
        self
    }

    /// Declares the queue and its bindings, then disconnects: for a deployment step that binds
    /// the queue before the relay publishes (RabbitMQ drops what no queue is bound for).
    ///
    /// # Errors
    /// [`SourceError::Transient`] when the broker cannot be reached;
    /// [`SourceError::Invalid`] for names longer than AMQP takes.
    pub async fn declare(&self) -> Result<(), SourceError> {
        let (connection, _channel) = self.declared().await?;
        connection
            .close(200, ShortString::from("declared"))
            .await
            .map_err(transient)
    }

    /// A connection and a channel on which the queue and its bindings are declared.
    async fn declared(&self) -> Result<(Connection, Channel), SourceError> {
        let queue = short("queue name", &self.queue)?;
        let connection = Connection::connect(&self.url, ConnectionProperties::default())
            .await
            .map_err(|error| {
                SourceError::Transient(format!("could not connect to RabbitMQ: {error}"))
            })?;
        let channel = connection.create_channel().await.map_err(transient)?;
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await
            .map_err(transient)?;
        channel
            .queue_declare(
                queue.clone(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(transient)?;
        for (exchange, pattern) in &self.bindings {
            let exchange = short("exchange name", exchange)?;
            channel
                .exchange_declare(
                    exchange.clone(),
                    lapin::ExchangeKind::Topic,
                    lapin::options::ExchangeDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(transient)?;
            channel
                .queue_bind(
                    queue.clone(),
                    exchange,
                    short("routing pattern", pattern)?,
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(transient)?;
        }
        Ok((connection, channel))
    }

    async fn open(&self) -> Result<Reading, SourceError> {
        let queue = short("queue name", &self.queue)?;
        let (connection, channel) = self.declared().await?;
        let consumer = channel
            .basic_consume(
                queue,
                ShortString::from(""),
                BasicConsumeOptions {
                    exclusive: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|error| {
                SourceError::Transient(format!(
                    "could not consume queue `{}` (another consumer may hold it): {error}",
                    self.queue
                ))
            })?;
        Ok(Reading {
            connection,
            channel,
            consumer,
        })
    }
}

/// A header's text: relays set long strings.
fn header<'a>(headers: Option<&'a FieldTable>, name: &str) -> Option<&'a str> {
    let value = headers?.inner().get(name)?;
    match value {
        AMQPValue::LongString(text) => std::str::from_utf8(text.as_bytes()).ok(),
        AMQPValue::ShortString(text) => Some(text.as_str()),
        _ => None,
    }
}

impl Source for RabbitMqSource {
    async fn resume(&mut self, _position: Option<u64>) -> Result<(), SourceError> {
        // A new connection: the old one's unacknowledged deliveries return to the queue.
        if let Some(old) = self.reading.take() {
            let _ = old
                .connection
                .close(200, ShortString::from("the consumer resumes"))
                .await;
        }
        self.reading = Some(self.open().await?);
        Ok(())
    }

    async fn next(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, SourceError> {
        let Some(reading) = self.reading.as_mut() else {
            return Err(SourceError::Transient("the source is not reading".into()));
        };
        let mut next = match tokio::time::timeout(wait, reading.consumer.next()).await {
            Err(_elapsed) => return Ok(Vec::new()),
            Ok(first) => first,
        };
        let mut deliveries = Vec::new();
        loop {
            let message = match next {
                Some(Ok(message)) => message,
                Some(Err(error)) => {
                    self.reading = None;
                    if deliveries.is_empty() {
                        return Err(transient(error));
                    }
                    return Ok(deliveries);
                }
                None => {
                    self.reading = None;
                    if deliveries.is_empty() {
                        return Err(SourceError::Transient("the queue's consumer ended".into()));
                    }
                    return Ok(deliveries);
                }
            };
            let headers = message.properties.headers().as_ref();
            match inbound(|name| header(headers, name), &message.data) {
                Ok(event) => deliveries.push(Delivery {
                    event,
                    receipt: Receipt::new(None, message.delivery_tag),
                }),
                // The messages before it are applied first; delivered again, it stops the
                // consumer.
                Err(_) if !deliveries.is_empty() => {
                    self.reading = None;
                    return Ok(deliveries);
                }
                Err(cause) => {
                    return Err(SourceError::Undecodable {
                        at: format!(
                            "queue `{}`, delivery {} (routing key `{}`)",
                            self.queue, message.delivery_tag, message.routing_key
                        ),
                        cause,
                    });
                }
            }
            if deliveries.len() >= max {
                return Ok(deliveries);
            }
            let Some(reading) = self.reading.as_mut() else {
                return Ok(deliveries);
            };
            match reading.consumer.next().now_or_never() {
                Some(item) => next = item,
                None => return Ok(deliveries),
            }
        }
    }

    async fn settle(&mut self, last: Receipt) -> Result<(), SourceError> {
        let Some(reading) = self.reading.as_ref() else {
            return Ok(());
        };
        let acked = reading
            .channel
            .basic_ack(last.tag, BasicAckOptions { multiple: true })
            .await;
        if acked.is_err() {
            self.reading = None;
        }
        acked.map_err(transient)
    }
}
