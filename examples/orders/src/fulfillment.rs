//! The order fulfillment saga: reserve inventory → process payment → ship → complete. A failure
//! at any step runs the compensations of the steps done, in reverse (refund the payment, release
//! the inventory, cancel the order); a payment that never answers times out and compensates.

use std::time::Duration;

use factum::saga::{Rejection, SagaContext};
use factum::{saga, timeout};
use serde::{Deserialize, Serialize};

use crate::inventory::{
    InventoryReservationFailed, InventoryReserved, ReleaseInventory, ReserveInventory,
};
use crate::order::{CancelOrder, CompleteOrder, OrderCancelled, OrderCompleted, OrderPlaced};
use crate::payment::{
    CancelPayment, PaymentDeclined, PaymentProcessed, ProcessPayment, RefundPayment,
};
use crate::shipping::{OrderShipped, ShipOrder, ShipmentFailed};
use crate::{Cents, inventory_stream, order_stream, payment_stream, shipment_stream};

/// How long the saga waits for a payment.
pub const PAYMENT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// The payment did not answer in time.
#[timeout]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentTimedOut {
    pub order_id: String,
}

/// Where an order's fulfillment stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stage {
    #[default]
    Reserving,
    Paying,
    Shipping,
    Completing,
    /// Undoing the steps done; the order is being cancelled.
    Compensating,
    Completed,
    Cancelled,
}

/// One order's fulfillment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderFulfillment {
    pub order_id: String,
    pub sku: String,
    pub quantity: u32,
    pub amount: Cents,
    pub card: String,
    pub address: String,
    pub stage: Stage,
    /// Why the order was cancelled.
    pub failure: Option<String>,
    /// The compensations sent, in order.
    pub compensations: Vec<String>,
    /// The payment was declined: nothing to void.
    pub payment_declined: bool,
}

#[saga(
    name = "order_fulfillment",
    commands(
        ReserveInventory,
        ReleaseInventory,
        ProcessPayment,
        RefundPayment,
        CancelPayment,
        ShipOrder,
        CompleteOrder,
        CancelOrder,
    )
)]
impl OrderFulfillment {
    #[start(by = order_id)]
    fn placed(&mut self, event: &OrderPlaced, context: &mut SagaContext<Self>) {
        self.order_id.clone_from(&event.order_id);
        self.sku.clone_from(&event.sku);
        self.quantity = event.quantity;
        self.amount = event.amount;
        self.card.clone_from(&event.card);
        self.address.clone_from(&event.address);
        self.stage = Stage::Reserving;
        context.send(
            inventory_stream(&event.sku),
            ReserveInventory {
                order_id: event.order_id.clone(),
                sku: event.sku.clone(),
                quantity: event.quantity,
            },
        );
    }

    #[handle(by = order_id)]
    fn reserved(&mut self, _: &InventoryReserved, context: &mut SagaContext<Self>) {
        if self.stage != Stage::Reserving {
            return;
        }
        self.stage = Stage::Paying;
        context.send(
            payment_stream(&self.order_id),
            ProcessPayment {
                order_id: self.order_id.clone(),
                amount: self.amount,
                card: self.card.clone(),
            },
        );
        context.schedule(
            PAYMENT_TIMEOUT,
            PaymentTimedOut {
                order_id: self.order_id.clone(),
            },
        );
    }

    #[handle(by = order_id)]
    fn out_of_stock(
        &mut self,
        event: &InventoryReservationFailed,
        context: &mut SagaContext<Self>,
    ) {
        let reason = format!(
            "out of stock: {} requested, {} available",
            event.requested, event.available
        );
        self.compensate(reason, context);
    }

    #[handle(by = order_id)]
    fn paid(&mut self, _: &PaymentProcessed, context: &mut SagaContext<Self>) {
        if self.stage != Stage::Paying {
            return;
        }
        context.cancel::<PaymentTimedOut>();
        self.stage = Stage::Shipping;
        context.send(
            shipment_stream(&self.order_id),
            ShipOrder {
                order_id: self.order_id.clone(),
                address: self.address.clone(),
            },
        );
    }

    #[handle(by = order_id)]
    fn declined(&mut self, event: &PaymentDeclined, context: &mut SagaContext<Self>) {
        context.cancel::<PaymentTimedOut>();
        self.payment_declined = true;
        self.compensate(format!("payment declined: {}", event.reason), context);
    }

    #[timeout]
    fn payment_timed_out(&mut self, _: &PaymentTimedOut, context: &mut SagaContext<Self>) {
        if self.stage == Stage::Paying {
            self.compensate("the payment did not answer in time".into(), context);
        }
    }

    #[handle(by = order_id)]
    fn shipped(&mut self, _: &OrderShipped, context: &mut SagaContext<Self>) {
        if self.stage != Stage::Shipping {
            return;
        }
        self.stage = Stage::Completing;
        context.send(
            order_stream(&self.order_id),
            CompleteOrder {
                order_id: self.order_id.clone(),
            },
        );
    }

    #[handle(by = order_id)]
    fn shipment_failed(&mut self, event: &ShipmentFailed, context: &mut SagaContext<Self>) {
        self.compensate(format!("shipment failed: {}", event.reason), context);
    }

    /// A refused command (an unknown SKU, an order that cannot complete...) fails the order.
    #[rejected]
    fn rejected(&mut self, rejection: &Rejection, context: &mut SagaContext<Self>) {
        self.compensate(
            format!("{} refused: {}", rejection.command_type, rejection.reason),
            context,
        );
    }

    #[handle(by = order_id, end)]
    fn completed(&mut self, _: &OrderCompleted, _: &mut SagaContext<Self>) {
        self.stage = Stage::Completed;
    }

    #[handle(by = order_id, end)]
    fn cancelled(&mut self, event: &OrderCancelled, _: &mut SagaContext<Self>) {
        self.stage = Stage::Cancelled;
        self.failure.get_or_insert_with(|| event.reason.clone());
    }

    /// Undoes the steps done, in reverse, then cancels the order.
    fn compensate(&mut self, reason: String, context: &mut SagaContext<Self>) {
        let done = match self.stage {
            Stage::Compensating | Stage::Completed | Stage::Cancelled => return,
            stage => stage,
        };
        self.stage = Stage::Compensating;
        let order_id = self.order_id.clone();
        if done == Stage::Completing || done == Stage::Shipping {
            context.send(
                payment_stream(&order_id),
                RefundPayment {
                    order_id: order_id.clone(),
                },
            );
            self.compensations.push("RefundPayment".into());
        }
        if done == Stage::Paying && !self.payment_declined {
            context.send(
                payment_stream(&order_id),
                CancelPayment {
                    order_id: order_id.clone(),
                },
            );
            self.compensations.push("CancelPayment".into());
        }
        if done != Stage::Reserving {
            context.send(
                inventory_stream(&self.sku),
                ReleaseInventory {
                    order_id: order_id.clone(),
                },
            );
            self.compensations.push("ReleaseInventory".into());
        }
        context.send(
            order_stream(&order_id),
            CancelOrder {
                order_id,
                reason: reason.clone(),
            },
        );
        self.compensations.push("CancelOrder".into());
        self.failure = Some(reason);
    }
}
