//! How the orders service's events leave it: its relays' configuration, which the event catalog
//! documents (`examples/catalog`: the AsyncAPI servers, channels and operations) and the
//! `shipping` example runs.

/// The relay to NATS JetStream.
pub const NATS_RELAY: &str = "orders-to-nats";
/// Its JetStream stream, which takes the subjects `orders.>`.
pub const JETSTREAM_STREAM: &str = "ORDERS";
/// The relay to RabbitMQ.
pub const RABBITMQ_RELAY: &str = "orders-to-rabbitmq";
/// Its topic exchange.
pub const EXCHANGE: &str = "orders";
/// The subjects' and routing keys' first token: `orders.<aggregate>.<event type>`.
pub const PREFIX: &str = "orders";
/// The aggregates whose events the relays publish.
pub const RELAYED_AGGREGATES: [&str; 1] = ["Order"];
