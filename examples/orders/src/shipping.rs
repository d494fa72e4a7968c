//! The shipment of one order. The example's carrier cannot deliver to `"nowhere"`.

use factum::{aggregate, command, event};
use serde::{Deserialize, Serialize};

#[event]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderShipped {
    pub order_id: String,
    pub address: String,
}

#[event]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShipmentFailed {
    pub order_id: String,
    pub reason: String,
}

#[event]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShipmentEvent {
    Shipped(OrderShipped),
    Failed(ShipmentFailed),
}

#[command]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShipOrder {
    pub order_id: String,
    pub address: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShipmentError {
    #[error("the order was already handed to the carrier")]
    AlreadyShipped,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShipmentStatus {
    #[default]
    None,
    Shipped,
    Failed,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shipment {
    pub status: ShipmentStatus,
}

#[aggregate(events = ShipmentEvent)]
impl Shipment {
    #[apply]
    fn shipped(&mut self, _: &OrderShipped) {
        self.status = ShipmentStatus::Shipped;
    }

    #[apply]
    fn failed(&mut self, _: &ShipmentFailed) {
        self.status = ShipmentStatus::Failed;
    }

    #[command]
    fn ship(&self, command: &ShipOrder) -> Result<ShipmentEvent, ShipmentError> {
        if self.status != ShipmentStatus::None {
            return Err(ShipmentError::AlreadyShipped);
        }
        let order_id = command.order_id.clone();
        Ok(
            if command.address.trim().is_empty() || command.address == "nowhere" {
                ShipmentFailed {
                    order_id,
                    reason: format!("the carrier cannot deliver to {:?}", command.address),
                }
                .into()
            } else {
                OrderShipped {
                    order_id,
                    address: command.address.clone(),
                }
                .into()
            },
        )
    }
}
