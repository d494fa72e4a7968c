//! Where the events go beyond the store: the brokers a catalog's relays publish to, the relays
//! (their subjects and routing keys are the AsyncAPI channels' addresses), and the services
//! that consume them. Declared with [`Catalog::broker`](super::Catalog::broker),
//! [`Catalog::relay`](super::Catalog::relay) and [`Catalog::service`](super::Catalog::service).

use crate::relay::subject_token;

/// The protocol of a [`Broker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Protocol {
    /// NATS with JetStream.
    Nats,
    /// AMQP 0-9-1 (RabbitMQ).
    Amqp,
}

impl Protocol {
    /// The AsyncAPI protocol name.
    #[must_use]
    pub fn asyncapi(self) -> &'static str {
        match self {
            Self::Nats => "nats",
            Self::Amqp => "amqp",
        }
    }
}

/// A message broker, an AsyncAPI server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    pub(super) name: String,
    pub(super) protocol: Protocol,
    pub(super) host: String,
    pub(super) description: Option<String>,
}

impl Broker {
    /// A NATS server with JetStream, named `name` in the catalog, at `host` (`host:port`).
    #[must_use]
    pub fn nats(name: impl Into<String>, host: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            protocol: Protocol::Nats,
            host: host.into(),
            description: None,
        }
    }

    /// A RabbitMQ broker (AMQP 0-9-1), named `name` in the catalog, at `host` (`host:port`).
    #[must_use]
    pub fn amqp(name: impl Into<String>, host: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            protocol: Protocol::Amqp,
            host: host.into(),
            description: None,
        }
    }

    /// What the server is (its environment, who runs it).
    #[must_use]
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }
}

/// Where a relay publishes on its broker.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Destination {
    /// A JetStream stream.
    JetStream {
        /// The stream's name.
        stream: String,
    },
    /// A RabbitMQ topic exchange.
    Exchange {
        /// The exchange's name.
        name: String,
        /// Its virtual host.
        vhost: String,
    },
}

/// A relay of the application, as configured where it runs: the catalog's channels are its
/// subjects or routing keys, `<prefix>.<aggregate type>.<event type>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayRoute {
    pub(super) name: String,
    pub(super) broker: String,
    pub(super) destination: Destination,
    pub(super) prefix: String,
    pub(super) aggregate_types: Option<Vec<String>>,
}

impl RelayRoute {
    /// The relay `name` publishing to the JetStream stream `stream` of the broker `broker` with
    /// the subject prefix `prefix` (as `JetStreamSink::new(client, stream, prefix)`).
    #[must_use]
    pub fn jetstream(
        name: impl Into<String>,
        broker: impl Into<String>,
        stream: impl Into<String>,
        prefix: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            broker: broker.into(),
            destination: Destination::JetStream {
                stream: stream.into(),
            },
            prefix: prefix.into(),
            aggregate_types: None,
        }
    }

    /// The relay `name` publishing to the exchange `exchange` (virtual host `/`) of the broker
    /// `broker` with the routing key prefix `prefix` (as
    /// `RabbitMqSink::connect(url, exchange, prefix)`).
    #[must_use]
    pub fn rabbitmq(
        name: impl Into<String>,
        broker: impl Into<String>,
        exchange: impl Into<String>,
        prefix: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            broker: broker.into(),
            destination: Destination::Exchange {
                name: exchange.into(),
                vhost: "/".into(),
            },
            prefix: prefix.into(),
            aggregate_types: None,
        }
    }

    /// Only events of these aggregate types (as `Relay::aggregate_types`).
    #[must_use]
    pub fn aggregate_types<I: IntoIterator<Item = T>, T: Into<String>>(mut self, types: I) -> Self {
        self.aggregate_types = Some(types.into_iter().map(Into::into).collect());
        self
    }

    /// Whether it publishes events of `aggregate`.
    pub(super) fn publishes(&self, aggregate: &str) -> bool {
        self.aggregate_types
            .as_ref()
            .is_none_or(|types| types.iter().any(|t| t == aggregate))
    }

    /// The subject or routing key of the events of type `event_type` of `aggregate`.
    #[must_use]
    pub fn address(&self, aggregate: &str, event_type: &str) -> String {
        format!(
            "{}.{}.{}",
            self.prefix,
            subject_token(aggregate),
            subject_token(event_type)
        )
    }
}

/// A service of another process consuming what a relay publishes (`factum::consumer`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub(super) name: String,
    pub(super) relay: String,
    pub(super) event_types: Vec<String>,
}

impl Service {
    /// The service `name`, reading what the relay `relay` publishes: add the event types it
    /// reads with [`Service::reads`] or [`Service::event_types`].
    #[must_use]
    pub fn new(name: impl Into<String>, relay: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            relay: relay.into(),
            event_types: Vec::new(),
        }
    }

    /// It reads the events of the set `S` (its own `#[event]` types, of the producer's names).
    #[must_use]
    pub fn reads<S: crate::event::EventSet>(mut self) -> Self {
        self.event_types
            .extend(S::EVENTS.iter().map(|event| event.name.to_owned()));
        self
    }

    /// It reads the events of these types.
    #[must_use]
    pub fn event_types<I: IntoIterator<Item = T>, T: Into<String>>(mut self, types: I) -> Self {
        self.event_types.extend(types.into_iter().map(Into::into));
        self
    }
}
