//! The stock of one SKU, and its reservations per order.

use std::collections::BTreeMap;

use factum::{aggregate, command, event};
use serde::{Deserialize, Serialize};

#[event]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockAdded {
    pub sku: String,
    pub quantity: u32,
}

#[event]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryReserved {
    pub order_id: String,
    pub sku: String,
    pub quantity: u32,
}

/// Not enough stock: a business outcome, recorded like any other.
#[event]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryReservationFailed {
    pub order_id: String,
    pub sku: String,
    pub requested: u32,
    pub available: u32,
}

#[event]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryReleased {
    pub order_id: String,
    pub sku: String,
    pub quantity: u32,
}

#[event]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InventoryEvent {
    Added(StockAdded),
    Reserved(InventoryReserved),
    ReservationFailed(InventoryReservationFailed),
    Released(InventoryReleased),
}

#[derive(Debug, Clone)]
pub struct AddStock {
    pub sku: String,
    pub quantity: u32,
}

#[command]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReserveInventory {
    pub order_id: String,
    pub sku: String,
    pub quantity: u32,
}

#[command]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseInventory {
    pub order_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InventoryError {
    #[error("unknown SKU: no stock was ever added")]
    UnknownSku,
    #[error("quantities must be positive")]
    NoQuantity,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    pub sku: String,
    pub known: bool,
    pub available: u32,
    /// Reserved quantity per order.
    pub reserved: BTreeMap<String, u32>,
}

#[aggregate(events = InventoryEvent)]
impl Inventory {
    #[apply]
    fn added(&mut self, event: &StockAdded) {
        self.sku.clone_from(&event.sku);
        self.known = true;
        self.available += event.quantity;
    }

    #[apply]
    fn reserved(&mut self, event: &InventoryReserved) {
        self.available -= event.quantity;
        self.reserved.insert(event.order_id.clone(), event.quantity);
    }

    #[apply]
    fn reservation_failed(&mut self, _: &InventoryReservationFailed) {}

    #[apply]
    fn released(&mut self, event: &InventoryReleased) {
        self.available += event.quantity;
        self.reserved.remove(&event.order_id);
    }

    #[command]
    fn add(&self, command: &AddStock) -> Result<StockAdded, InventoryError> {
        if command.quantity == 0 {
            return Err(InventoryError::NoQuantity);
        }
        Ok(StockAdded {
            sku: command.sku.clone(),
            quantity: command.quantity,
        })
    }

    #[command]
    fn reserve(
        &self,
        command: &ReserveInventory,
    ) -> Result<Option<InventoryEvent>, InventoryError> {
        if !self.known {
            return Err(InventoryError::UnknownSku);
        }
        if self.reserved.contains_key(&command.order_id) {
            return Ok(None); // reserved already
        }
        if self.available < command.quantity {
            return Ok(Some(
                InventoryReservationFailed {
                    order_id: command.order_id.clone(),
                    sku: command.sku.clone(),
                    requested: command.quantity,
                    available: self.available,
                }
                .into(),
            ));
        }
        Ok(Some(
            InventoryReserved {
                order_id: command.order_id.clone(),
                sku: command.sku.clone(),
                quantity: command.quantity,
            }
            .into(),
        ))
    }

    #[command]
    fn release(
        &self,
        command: &ReleaseInventory,
    ) -> Result<Option<InventoryReleased>, InventoryError> {
        Ok(self
            .reserved
            .get(&command.order_id)
            .map(|&quantity| InventoryReleased {
                order_id: command.order_id.clone(),
                sku: self.sku.clone(),
                quantity,
            }))
    }
}
