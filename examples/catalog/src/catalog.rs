//! The examples' catalog: shared by the build script (which writes it) and the tests (which
//! check it).

use factum::catalog::{Broker, Catalog, RelayRoute, Service};
use orders::relays;

/// Every example aggregate's events, and where the orders service's relays publish them: NATS
/// JetStream (read by the `shipping` service) and RabbitMQ (read by the `notifications`
/// service), as `examples/shipping` runs them.
#[must_use]
pub fn catalog() -> Catalog {
    Catalog::new("Factum examples", env!("CARGO_PKG_VERSION"))
        .description("The events of Factum's examples.")
        .aggregate::<bank::BankAccount>()
        .projection::<bank::projections::AccountBalances>()
        .aggregate::<orders::order::Order>()
        .aggregate::<orders::inventory::Inventory>()
        .aggregate::<orders::payment::Payment>()
        .aggregate::<orders::shipping::Shipment>()
        .aggregate::<orders::customer::Customer>()
        .projection::<orders::board::OrderBoard>()
        .saga::<orders::fulfillment::OrderFulfillment>()
        .broker(
            Broker::nats("nats", "127.0.0.1:4222")
                .description("NATS with JetStream (the development machines' server)."),
        )
        .broker(
            Broker::amqp("rabbitmq", "127.0.0.1:5672")
                .description("RabbitMQ (the development machines' broker), virtual host `/`."),
        )
        .relay(
            RelayRoute::jetstream(
                relays::NATS_RELAY,
                "nats",
                relays::JETSTREAM_STREAM,
                relays::PREFIX,
            )
            .aggregate_types(relays::RELAYED_AGGREGATES),
        )
        .relay(
            RelayRoute::rabbitmq(
                relays::RABBITMQ_RELAY,
                "rabbitmq",
                relays::EXCHANGE,
                relays::PREFIX,
            )
            .aggregate_types(relays::RELAYED_AGGREGATES),
        )
        .service(
            Service::new("shipping", relays::NATS_RELAY)
                .event_types(["OrderPlaced", "OrderCancelled"]),
        )
        .service(
            Service::new("notifications", relays::RABBITMQ_RELAY).event_types([
                "OrderPlaced",
                "OrderCancelled",
                "OrderCompleted",
            ]),
        )
}
