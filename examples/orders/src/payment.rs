//! The payment of one order, through the example's card gateway: `"declined"` is refused,
//! `"3ds"` waits for the card holder's confirmation (which may never come), any other card is
//! charged at once.

use factum::{aggregate, command, event};
use serde::{Deserialize, Serialize};

use crate::Cents;

#[event]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentProcessed {
    pub order_id: String,
    pub amount: Cents,
}

#[event]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentDeclined {
    pub order_id: String,
    pub reason: String,
}

/// The card holder was challenged (3-D Secure): the payment waits for them.
#[event]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentChallenged {
    pub order_id: String,
    pub amount: Cents,
}

#[event]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRefunded {
    pub order_id: String,
    pub amount: Cents,
}

#[event]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentCancelled {
    pub order_id: String,
}

#[event]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentEvent {
    Processed(PaymentProcessed),
    Declined(PaymentDeclined),
    Challenged(PaymentChallenged),
    Refunded(PaymentRefunded),
    Cancelled(PaymentCancelled),
}

#[command]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessPayment {
    pub order_id: String,
    pub amount: Cents,
    pub card: String,
}

/// The card holder confirmed a pending payment (sent by the gateway, not a saga).
#[derive(Debug, Clone)]
pub struct ConfirmPayment {
    pub order_id: String,
}

#[command]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundPayment {
    pub order_id: String,
}

/// Voids a payment still waiting for the card holder.
#[command]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelPayment {
    pub order_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    #[error("the payment was already requested")]
    AlreadyRequested,
    #[error("no payment is waiting for confirmation (it is {0:?})")]
    NotPending(PaymentStatus),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentStatus {
    #[default]
    None,
    Pending,
    Processed,
    Declined,
    Refunded,
    Cancelled,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub status: PaymentStatus,
    pub amount: Cents,
}

#[aggregate(events = PaymentEvent)]
impl Payment {
    #[apply]
    fn processed(&mut self, event: &PaymentProcessed) {
        self.status = PaymentStatus::Processed;
        self.amount = event.amount;
    }

    #[apply]
    fn declined(&mut self, _: &PaymentDeclined) {
        self.status = PaymentStatus::Declined;
    }

    #[apply]
    fn challenged(&mut self, event: &PaymentChallenged) {
        self.status = PaymentStatus::Pending;
        self.amount = event.amount;
    }

    #[apply]
    fn refunded(&mut self, _: &PaymentRefunded) {
        self.status = PaymentStatus::Refunded;
    }

    #[apply]
    fn cancelled(&mut self, _: &PaymentCancelled) {
        self.status = PaymentStatus::Cancelled;
    }

    #[command]
    fn process(&self, command: &ProcessPayment) -> Result<PaymentEvent, PaymentError> {
        if self.status != PaymentStatus::None {
            return Err(PaymentError::AlreadyRequested);
        }
        let order_id = command.order_id.clone();
        Ok(match command.card.as_str() {
            "declined" => PaymentDeclined {
                order_id,
                reason: "the card was declined".into(),
            }
            .into(),
            "3ds" => PaymentChallenged {
                order_id,
                amount: command.amount,
            }
            .into(),
            _ => PaymentProcessed {
                order_id,
                amount: command.amount,
            }
            .into(),
        })
    }

    #[command]
    fn confirm(&self, command: &ConfirmPayment) -> Result<PaymentProcessed, PaymentError> {
        if self.status != PaymentStatus::Pending {
            return Err(PaymentError::NotPending(self.status));
        }
        Ok(PaymentProcessed {
            order_id: command.order_id.clone(),
            amount: self.amount,
        })
    }

    #[command]
    fn refund(&self, command: &RefundPayment) -> Result<Option<PaymentRefunded>, PaymentError> {
        Ok(
            (self.status == PaymentStatus::Processed).then(|| PaymentRefunded {
                order_id: command.order_id.clone(),
                amount: self.amount,
            }),
        )
    }

    #[command]
    fn cancel(&self, command: &CancelPayment) -> Result<Option<PaymentCancelled>, PaymentError> {
        Ok(
            (self.status == PaymentStatus::Pending).then(|| PaymentCancelled {
                order_id: command.order_id.clone(),
            }),
        )
    }
}
