//! The bank's customers: the example's personal data. A customer's name and email are `#[pii]`
//! fields, sealed under the customer's own data key; accounts name their owner by customer id
//! only. `store.forget(customer_id)` (or `factum forget <customer id>`) erases the name and the
//! email from every read while the accounts and their balances stay whole (see
//! [`crate::erasure`]). A store keeping these events needs a key provider
//! (`with_key_provider`).

use factum::{aggregate, event};
use serde::{Deserialize, Serialize};

#[event]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerOnboarded {
    #[pii(subject)]
    pub customer_id: String,
    #[pii(replacement = "[erased]".to_owned())]
    pub name: String,
    #[pii]
    pub email: Option<String>,
}

#[event]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CustomerEvent {
    Onboarded(CustomerOnboarded),
}

/// Onboards a customer.
#[derive(Debug, Clone)]
pub struct Onboard {
    pub customer_id: String,
    pub name: String,
    pub email: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the customer is onboarded already")]
pub struct AlreadyOnboarded;

/// A customer, rebuilt from its events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    pub onboarded: bool,
    pub name: String,
    pub email: Option<String>,
}

#[aggregate(events = CustomerEvent)]
impl Customer {
    #[apply]
    fn onboarded(&mut self, event: &CustomerOnboarded) {
        self.onboarded = true;
        self.name.clone_from(&event.name);
        self.email.clone_from(&event.email);
    }

    #[command]
    fn onboard(&self, command: &Onboard) -> Result<CustomerOnboarded, AlreadyOnboarded> {
        if self.onboarded {
            return Err(AlreadyOnboarded);
        }
        Ok(CustomerOnboarded {
            customer_id: command.customer_id.clone(),
            name: command.name.clone(),
            email: Some(command.email.clone()),
        })
    }
}

/// A customer's stream.
#[must_use]
pub fn customer_stream(customer_id: &str) -> String {
    format!("customer-{customer_id}")
}
