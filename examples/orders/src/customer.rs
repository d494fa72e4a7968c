//! The shop's customers: the only personal data of the example. A customer's name and email
//! are `#[pii]` fields, sealed under the customer's own data key: `store.forget(customer_id)`
//! (or `factum forget <customer id>`) erases them from every read, while the orders, which
//! name customers only by id, stay whole. A store keeping these events needs a key provider
//! (`with_key_provider`).

use factum::{aggregate, command, event};
use serde::{Deserialize, Serialize};

#[event]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerRegistered {
    #[pii(subject)]
    pub customer_id: String,
    #[pii(replacement = "[erased]".to_owned())]
    pub name: String,
    #[pii]
    pub email: Option<String>,
}

#[event]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerEmailChanged {
    #[pii(subject)]
    pub customer_id: String,
    #[pii]
    pub email: Option<String>,
}

#[event]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CustomerEvent {
    Registered(CustomerRegistered),
    EmailChanged(CustomerEmailChanged),
}

#[command]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterCustomer {
    pub customer_id: String,
    pub name: String,
    pub email: String,
}

#[command]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeEmail {
    pub customer_id: String,
    pub email: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CustomerError {
    #[error("the customer is registered already")]
    AlreadyRegistered,
    #[error("no such customer")]
    NotRegistered,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    pub registered: bool,
    pub name: String,
    pub email: Option<String>,
}

#[aggregate(events = CustomerEvent)]
impl Customer {
    #[apply]
    fn registered(&mut self, event: &CustomerRegistered) {
        self.registered = true;
        self.name.clone_from(&event.name);
        self.email.clone_from(&event.email);
    }

    #[apply]
    fn email_changed(&mut self, event: &CustomerEmailChanged) {
        self.email.clone_from(&event.email);
    }

    #[command]
    fn register(&self, command: &RegisterCustomer) -> Result<CustomerRegistered, CustomerError> {
        if self.registered {
            return Err(CustomerError::AlreadyRegistered);
        }
        Ok(CustomerRegistered {
            customer_id: command.customer_id.clone(),
            name: command.name.clone(),
            email: Some(command.email.clone()),
        })
    }

    #[command]
    fn change_email(&self, command: &ChangeEmail) -> Result<CustomerEmailChanged, CustomerError> {
        if !self.registered {
            return Err(CustomerError::NotRegistered);
        }
        Ok(CustomerEmailChanged {
            customer_id: command.customer_id.clone(),
            email: Some(command.email.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use factum::pii::LocalKeyProvider;
    use factum::{EventStore as _, MemoryStore, Repository};

    use super::*;

    #[tokio::test]
    async fn a_forgotten_customer_reads_as_erased() {
        let store = MemoryStore::new().with_key_provider(LocalKeyProvider::ephemeral().unwrap());
        let customers = Repository::<Customer, _>::new(store.clone());
        let register = RegisterCustomer {
            customer_id: "c-1".into(),
            name: "Ada Lovelace".into(),
            email: "ada@example.com".into(),
        };
        customers.execute("customer-c-1", register).await.unwrap();
        let loaded = customers.load("customer-c-1").await.unwrap().state;
        assert_eq!(loaded.name, "Ada Lovelace");

        assert!(store.forget("c-1").await.unwrap());
        let forgotten = customers.load("customer-c-1").await.unwrap().state;
        assert_eq!(
            (forgotten.name.as_str(), forgotten.email),
            ("[erased]", None)
        );
        assert!(store.read_stream("customer-c-1", ..).await.unwrap()[0].shredded);
    }
}
