//! [`RabbitMqSink`]: a relay's sink publishing to a RabbitMQ exchange with `lapin`, with
//! publisher confirms.

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use tokio::sync::Mutex;

use super::message::{Outbound, subject_token};
use super::{Sink, SinkError};
use crate::position::FeedPosition;

/// The largest message RabbitMQ 4 takes by default (`max_message_size`, 16 MiB).
const DEFAULT_MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// Publishes to a RabbitMQ exchange (a topic exchange, durable) with routing keys
/// `<prefix>.<aggregate type>.<event type>`, persistent messages whose `message_id` is the event
/// id, with publisher confirms: a message is acknowledged when the broker confirmed it (stored
/// it in every queue it routes to). A batch is sent whole, then its confirms awaited in order.
///
/// RabbitMQ keeps no de-duplication window and cannot be asked what a relay published last: a
/// relay that restarts publishes again what it had not checkpointed (a batch, at most), so
/// delivery is at least once. Consumers apply each event once by its stream version
/// ([`consumer`](crate::consumer)). A message routed to no queue is confirmed and dropped by the
/// broker, as RabbitMQ does: bind the consumers' queues before the relay starts.
///
/// The connection is opened when first needed and again after any failure (a broker restart, a
/// dropped connection): the relay retries the batch.
#[derive(Debug)]
pub struct RabbitMqSink {
    url: String,
    exchange: ShortString,
    prefix: String,
    max_message_size: usize,
    channel: Mutex<Option<(Connection, Channel)>>,
}

impl RabbitMqSink {
    /// A sink publishing to the exchange `exchange` (declared here as a durable topic exchange
    /// when it does not exist) of the broker at `url` (`amqp://guest:guest@127.0.0.1:5672/%2f`).
    ///
    /// # Errors
    /// [`SinkError::Transient`] when the broker cannot be reached now;
    /// [`SinkError::Permanent`] when the exchange exists with another type, or the name is too
    /// long.
    pub async fn connect(url: &str, exchange: &str, prefix: &str) -> Result<Self, SinkError> {
        let exchange = ShortString::try_new(exchange).map_err(|error| {
            SinkError::Permanent(format!("exchange name `{exchange}`: {error}"))
        })?;
        let sink = Self {
            url: url.to_owned(),
            exchange,
            prefix: prefix.to_owned(),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            channel: Mutex::new(None),
        };
        let (connection, channel) = sink.open().await?;
        channel
            .exchange_declare(
                sink.exchange.clone(),
                lapin::ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|error| match error.kind() {
                lapin::ErrorKind::ProtocolError(_) => SinkError::Permanent(format!(
                    "exchange `{}` cannot be declared as a durable topic exchange: {error}",
                    sink.exchange
                )),
                _ => transient(error),
            })?;
        *sink.channel.lock().await = Some((connection, channel));
        Ok(sink)
    }

    /// The largest message (payload and headers) the broker takes: its `max_message_size`
    /// (16 MiB by default on RabbitMQ 4). Larger ones become dead letters without being sent.
    #[must_use]
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// The routing key of `message`: `<prefix>.<aggregate type>.<event type>`.
    #[must_use]
    pub fn routing_key(&self, message: &Outbound) -> String {
        format!(
            "{}.{}.{}",
            self.prefix,
            subject_token(&message.event.aggregate_type),
            subject_token(&message.event.event_type)
        )
    }

    async fn open(&self) -> Result<(Connection, Channel), SinkError> {
        let connection = Connection::connect(&self.url, ConnectionProperties::default())
            .await
            .map_err(|error| {
                SinkError::Transient(format!("could not connect to RabbitMQ: {error}"))
            })?;
        let channel = connection.create_channel().await.map_err(transient)?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(transient)?;
        Ok((connection, channel))
    }

    /// The properties of `message`, its envelope headers built in one pass over the envelope,
    /// and the message's size as the broker counts it (approximately: headers, properties and
    /// body).
    fn properties(message: &Outbound) -> (BasicProperties, usize) {
        let mut headers = FieldTable::default();
        let mut size = message.payload().len() + 128;
        for (name, value) in message.headers() {
            size += name.len() + value.len() + 8;
            headers.insert(
                ShortString::from(name),
                AMQPValue::LongString(LongString::from(value.into_owned())),
            );
        }
        let id = message.event.event_id.to_string();
        let properties = BasicProperties::default()
            .with_headers(headers)
            .with_message_id(ShortString::from(id))
            .with_content_type(ShortString::from("application/json"))
            .with_type(
                ShortString::try_new(message.event.event_type.clone())
                    .unwrap_or_else(|_| ShortString::from("")),
            )
            .with_delivery_mode(2)
            .with_timestamp(u64::try_from(message.event.recorded_at.timestamp()).unwrap_or(0));
        (properties, size)
    }
}

fn transient(error: impl std::fmt::Display) -> SinkError {
    SinkError::Transient(error.to_string())
}

impl Sink for RabbitMqSink {
    /// The routing key, the body and the properties.
    type Message = (ShortString, Vec<u8>, BasicProperties);

    fn prepare(&self, message: &Outbound) -> Result<Self::Message, String> {
        let (properties, size) = Self::properties(message);
        if size > self.max_message_size {
            return Err(format!(
                "the message is {size} bytes; the broker takes at most {} (max_message_size)",
                self.max_message_size
            ));
        }
        let key = self.routing_key(message);
        let length = key.len();
        let key = ShortString::try_new(key)
            .map_err(|_| format!("the routing key is {length} bytes; AMQP takes at most 255"))?;
        Ok((key, message.payload().as_bytes().to_vec(), properties))
    }

    async fn publish(&self, messages: Vec<Self::Message>) -> Vec<Result<(), SinkError>> {
        let mut guard = self.channel.lock().await;
        let channel = match guard.as_ref() {
            Some((connection, channel))
                if connection.status().connected() && channel.status().connected() =>
            {
                channel.clone()
            }
            _ => match self.open().await {
                Ok(opened) => {
                    let channel = opened.1.clone();
                    *guard = Some(opened);
                    channel
                }
                Err(error) => {
                    *guard = None;
                    return vec![Err(error)];
                }
            },
        };
        let mut confirms = Vec::with_capacity(messages.len());
        let mut stopped = None;
        for (key, payload, properties) in messages {
            match channel
                .basic_publish(
                    self.exchange.clone(),
                    key,
                    BasicPublishOptions::default(),
                    &payload,
                    properties,
                )
                .await
            {
                Ok(confirm) => confirms.push(confirm),
                Err(error) => {
                    stopped = Some(transient(error));
                    break;
                }
            }
        }
        let mut answered = Vec::with_capacity(confirms.len() + 1);
        for confirm in confirms {
            match confirm.await {
                Ok(Confirmation::Ack(_) | Confirmation::NotRequested) => answered.push(Ok(())),
                Ok(Confirmation::Nack(_)) => {
                    answered.push(Err(SinkError::Transient(
                        "the broker could not store the message (nack)".into(),
                    )));
                    return answered;
                }
                Err(error) => {
                    // The channel or connection failed: the rest is published again on a new one.
                    *guard = None;
                    answered.push(Err(transient(error)));
                    return answered;
                }
            }
        }
        if let Some(error) = stopped {
            *guard = None;
            answered.push(Err(error));
        }
        answered
    }

    async fn last_published(&self, _relay: &str) -> Result<Option<FeedPosition>, SinkError> {
        // RabbitMQ cannot be asked: the relay resumes at its checkpoint.
        Ok(None)
    }
}
