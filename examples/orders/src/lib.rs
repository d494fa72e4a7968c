//! Order fulfillment on Factum (the seeds' saga example): an order is placed; the
//! `order_fulfillment` saga reserves inventory, processes the payment and ships; a failure at
//! any step compensates the steps done in reverse; a payment that never answers times out.
//!
//! Four aggregates, each in its own streams: [`order::Order`] (`order-{id}`),
//! [`inventory::Inventory`] (`sku-{sku}`), [`payment::Payment`] (`payment-{order}`) and
//! [`shipping::Shipment`] (`shipment-{order}`).

pub mod board;
pub mod customer;
pub mod fulfillment;
pub mod inventory;
pub mod order;
pub mod payment;
pub mod relays;
pub mod shipping;

use factum::saga::CommandBus;
use factum::{EventStore, Repository};

use crate::inventory::Inventory;
use crate::order::Order;
use crate::payment::Payment;
use crate::shipping::Shipment;

/// Amounts are in cents.
pub type Cents = u64;

#[must_use]
pub fn order_stream(order_id: &str) -> String {
    format!("order-{order_id}")
}

#[must_use]
pub fn inventory_stream(sku: &str) -> String {
    format!("sku-{sku}")
}

#[must_use]
pub fn payment_stream(order_id: &str) -> String {
    format!("payment-{order_id}")
}

#[must_use]
pub fn shipment_stream(order_id: &str) -> String {
    format!("shipment-{order_id}")
}

/// The repositories of the four aggregates on one store.
#[derive(Debug, Clone)]
pub struct Services<S> {
    pub orders: Repository<Order, S>,
    pub inventory: Repository<Inventory, S>,
    pub payments: Repository<Payment, S>,
    pub shipments: Repository<Shipment, S>,
}

impl<S: EventStore + Clone + 'static> Services<S> {
    #[must_use]
    pub fn new(store: &S) -> Self {
        Self {
            orders: Repository::new(store.clone()),
            inventory: Repository::new(store.clone()),
            payments: Repository::new(store.clone()),
            shipments: Repository::new(store.clone()),
        }
    }

    /// The command bus routing every command the saga sends.
    #[must_use]
    pub fn bus(&self) -> CommandBus {
        CommandBus::new()
            .route::<inventory::ReserveInventory>(&self.inventory)
            .route::<inventory::ReleaseInventory>(&self.inventory)
            .route::<payment::ProcessPayment>(&self.payments)
            .route::<payment::RefundPayment>(&self.payments)
            .route::<payment::CancelPayment>(&self.payments)
            .route::<shipping::ShipOrder>(&self.shipments)
            .route::<order::CompleteOrder>(&self.orders)
            .route::<order::CancelOrder>(&self.orders)
    }
}
