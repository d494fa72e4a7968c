//! The order: placed by a customer, then completed or cancelled by the fulfillment saga.

use factum::{aggregate, command, event};
use serde::{Deserialize, Serialize};

use crate::Cents;

#[event]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderPlaced {
    pub order_id: String,
    pub customer: String,
    pub sku: String,
    pub quantity: u32,
    pub amount: Cents,
    /// The card to charge (`"declined"` and `"3ds"` are the example gateway's test cards).
    pub card: String,
    pub address: String,
}

#[event]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderCompleted {
    pub order_id: String,
}

#[event]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderCancelled {
    pub order_id: String,
    pub reason: String,
}

#[event]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderEvent {
    Placed(OrderPlaced),
    Completed(OrderCompleted),
    Cancelled(OrderCancelled),
}

/// Placed by the customer (through the application, not a saga).
#[derive(Debug, Clone)]
pub struct PlaceOrder {
    pub order_id: String,
    pub customer: String,
    pub sku: String,
    pub quantity: u32,
    pub amount: Cents,
    pub card: String,
    pub address: String,
}

#[command]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompleteOrder {
    pub order_id: String,
}

#[command]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelOrder {
    pub order_id: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("the order is already placed")]
    AlreadyPlaced,
    #[error("the order has not been placed")]
    NotPlaced,
    #[error("the order is already {0:?}")]
    Closed(OrderStatus),
    #[error("an order needs a quantity of at least 1")]
    NoQuantity,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderStatus {
    #[default]
    New,
    Placed,
    Completed,
    Cancelled,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub status: OrderStatus,
    pub cancel_reason: Option<String>,
}

#[aggregate(events = OrderEvent)]
impl Order {
    #[apply]
    fn placed(&mut self, _: &OrderPlaced) {
        self.status = OrderStatus::Placed;
    }

    #[apply]
    fn completed(&mut self, _: &OrderCompleted) {
        self.status = OrderStatus::Completed;
    }

    #[apply]
    fn cancelled(&mut self, event: &OrderCancelled) {
        self.status = OrderStatus::Cancelled;
        self.cancel_reason = Some(event.reason.clone());
    }

    #[command]
    fn place(&self, command: &PlaceOrder) -> Result<OrderPlaced, OrderError> {
        if self.status != OrderStatus::New {
            return Err(OrderError::AlreadyPlaced);
        }
        if command.quantity == 0 {
            return Err(OrderError::NoQuantity);
        }
        Ok(OrderPlaced {
            order_id: command.order_id.clone(),
            customer: command.customer.clone(),
            sku: command.sku.clone(),
            quantity: command.quantity,
            amount: command.amount,
            card: command.card.clone(),
            address: command.address.clone(),
        })
    }

    #[command]
    fn complete(&self, command: &CompleteOrder) -> Result<OrderCompleted, OrderError> {
        self.ensure_placed()?;
        Ok(OrderCompleted {
            order_id: command.order_id.clone(),
        })
    }

    #[command]
    fn cancel(&self, command: &CancelOrder) -> Result<OrderCancelled, OrderError> {
        self.ensure_placed()?;
        Ok(OrderCancelled {
            order_id: command.order_id.clone(),
            reason: command.reason.clone(),
        })
    }

    fn ensure_placed(&self) -> Result<(), OrderError> {
        match self.status {
            OrderStatus::Placed => Ok(()),
            OrderStatus::New => Err(OrderError::NotPlaced),
            closed => Err(OrderError::Closed(closed)),
        }
    }
}
