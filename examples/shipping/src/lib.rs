//! Two services of other teams, each in a process of its own, which learn of orders only
//! through a broker: the orders service's relays publish its `Order` events to NATS JetStream
//! and RabbitMQ (`orders.Order.OrderPlaced`, ..., as the event catalog documents), and each
//! service reads them with a Factum [`Consumer`](factum::consumer::Consumer) into its own Redis
//! read model ([`redis_model`]), each event once:
//!
//! - **shipping** (from JetStream): the orders to ship, with their addresses, and the cancelled
//!   ones ([`Shipping`]);
//! - **notifications** (from a RabbitMQ queue bound to the `orders` exchange): the messages to
//!   send each customer ([`Notifications`]).
//!
//! Each declares only the events and fields it reads ([`OrderPlaced`], [`OrderCancelled`],
//! [`OrderCompleted`]: tolerant readers of the orders service's types of the same names).

pub mod redis_model;

use factum::RecordedEvent;

use crate::redis_model::{Model, RedisReadModel, Write};

/// What the services read of `OrderPlaced`.
#[factum::event]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderPlaced {
    pub order_id: String,
    pub customer: String,
    pub address: String,
}

/// What the services read of `OrderCancelled`.
#[factum::event]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderCancelled {
    pub order_id: String,
    pub reason: String,
}

/// What the notifications service reads of `OrderCompleted`.
#[factum::event]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderCompleted {
    pub order_id: String,
}

/// The shipping service's contract with the orders service: the events, versions and fields
/// it reads, from its own types. Committed as `contracts/shipping-service.json`; checked against
/// the orders catalog in both teams' CI (`factum catalog check --consumer ...`).
#[must_use]
pub fn shipping_contract() -> factum::catalog::ConsumerContract {
    factum::catalog::ConsumerContract::new("shipping-service")
        .reads::<OrderPlaced>()
        .reads::<OrderCancelled>()
}

/// The notifications service's contract (`contracts/notifications-service.json`).
#[must_use]
pub fn notifications_contract() -> factum::catalog::ConsumerContract {
    factum::catalog::ConsumerContract::new("notifications-service")
        .reads::<OrderPlaced>()
        .reads::<OrderCancelled>()
        .reads::<OrderCompleted>()
}

/// The events the shipping service reads.
#[factum::event]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShippingFeed {
    Placed(OrderPlaced),
    Cancelled(OrderCancelled),
}

/// The events the notifications service reads.
#[factum::event]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotificationFeed {
    Placed(OrderPlaced),
    Cancelled(OrderCancelled),
    Completed(OrderCompleted),
}

/// The shipping board: `<prefix>order:<id>` (a hash: status, customer, address or reason) and
/// `<prefix>to-ship` (the set of orders to ship).
#[derive(Debug, Clone, Copy, Default)]
pub struct Shipping;

impl Model for Shipping {
    type Events = ShippingFeed;

    fn writes(&self, prefix: &str, event: ShippingFeed, _: &RecordedEvent) -> Vec<Write> {
        match event {
            ShippingFeed::Placed(placed) => vec![
                Write::hset(
                    format!("{prefix}order:{}", placed.order_id),
                    &[
                        ("status", "to-ship"),
                        ("customer", &placed.customer),
                        ("address", &placed.address),
                    ],
                ),
                Write::sadd(format!("{prefix}to-ship"), &placed.order_id),
            ],
            ShippingFeed::Cancelled(cancelled) => vec![
                Write::hset(
                    format!("{prefix}order:{}", cancelled.order_id),
                    &[("status", "cancelled"), ("reason", &cancelled.reason)],
                ),
                Write::srem(format!("{prefix}to-ship"), &cancelled.order_id),
            ],
        }
    }
}

/// One order as the shipping service knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shipment {
    pub order_id: String,
    pub status: String,
    pub customer: Option<String>,
    pub address: Option<String>,
    pub reason: Option<String>,
}

impl RedisReadModel<Shipping> {
    /// The orders to ship, sorted.
    ///
    /// # Errors
    /// A Redis error.
    pub async fn to_ship(&self) -> redis::RedisResult<Vec<String>> {
        let mut orders: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.key("to-ship"))
            .query_async(&mut self.connection())
            .await?;
        orders.sort();
        Ok(orders)
    }

    /// What the board knows of `order_id`.
    ///
    /// # Errors
    /// A Redis error.
    pub async fn shipment(&self, order_id: &str) -> redis::RedisResult<Option<Shipment>> {
        let fields: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.key(&format!("order:{order_id}")))
            .query_async(&mut self.connection())
            .await?;
        let Some(status) = fields.get("status").cloned() else {
            return Ok(None);
        };
        Ok(Some(Shipment {
            order_id: order_id.to_owned(),
            status,
            customer: fields.get("customer").cloned(),
            address: fields.get("address").cloned(),
            reason: fields.get("reason").cloned(),
        }))
    }
}

/// The notifications to send: `<prefix>customer:<id>:order` (which customer an order is for)
/// and `<prefix>outbox` (a list of `customer: message`, in the order the events came).
#[derive(Debug, Clone, Copy, Default)]
pub struct Notifications;

impl Model for Notifications {
    type Events = NotificationFeed;

    fn writes(
        &self,
        prefix: &str,
        event: NotificationFeed,
        envelope: &RecordedEvent,
    ) -> Vec<Write> {
        let outbox = format!("{prefix}outbox");
        // The customer of a later event is the one its order was placed for (looked up when
        // sending: the outbox names the order's stream).
        match event {
            NotificationFeed::Placed(placed) => vec![
                Write::hset(
                    format!("{prefix}customers"),
                    &[(envelope.stream_id.as_str(), placed.customer.as_str())],
                ),
                Write::rpush(
                    outbox,
                    format!(
                        "{}: your order {} is placed; it ships to {}",
                        placed.customer, placed.order_id, placed.address
                    ),
                ),
            ],
            NotificationFeed::Cancelled(cancelled) => vec![Write::rpush(
                outbox,
                format!(
                    "{}: your order {} is cancelled ({})",
                    envelope.stream_id, cancelled.order_id, cancelled.reason
                ),
            )],
            NotificationFeed::Completed(completed) => vec![Write::rpush(
                outbox,
                format!(
                    "{}: your order {} is complete",
                    envelope.stream_id, completed.order_id
                ),
            )],
        }
    }
}

impl RedisReadModel<Notifications> {
    /// The outbox, each line with the customer it is for (`order-<id>` lines resolved to the
    /// customer their order was placed for).
    ///
    /// # Errors
    /// A Redis error.
    pub async fn outbox(&self) -> redis::RedisResult<Vec<String>> {
        let mut redis = self.connection();
        let lines: Vec<String> = redis::cmd("LRANGE")
            .arg(self.key("outbox"))
            .arg(0)
            .arg(-1)
            .query_async(&mut redis)
            .await?;
        let customers: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.key("customers"))
            .query_async(&mut redis)
            .await?;
        Ok(lines
            .into_iter()
            .map(|line| match line.split_once(": ") {
                Some((stream, rest)) if customers.contains_key(stream) => {
                    format!("{}: {rest}", customers[stream])
                }
                _ => line,
            })
            .collect())
    }
}

/// The shipping service's read model.
pub type ShippingBoard = RedisReadModel<Shipping>;
/// The notifications service's read model.
pub type NotificationOutbox = RedisReadModel<Notifications>;
