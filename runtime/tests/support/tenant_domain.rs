//! The domain of the tenancy tests on both stores (`postgres_tenants.rs`, `sqlite_tenants.rs`):
//! accounts with deposits, a ledger projection that names the streams it saw, a welcome saga
//! whose instance ids two tenants share, and an event with personal data.

#![allow(dead_code)] // each test file uses its own part

use factum::{Envelope, NewEvent, Tx};

#[factum::event]
#[derive(Debug, Clone, PartialEq)]
pub struct Deposited {
    pub cents: i64,
}

#[factum::event]
#[derive(Debug, Clone, PartialEq)]
pub enum AccountEvent {
    Deposited(Deposited),
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Account {
    pub cents: i64,
}

#[derive(Debug)]
pub struct Deposit(pub i64);

#[factum::aggregate(events = AccountEvent)]
impl Account {
    #[apply]
    fn deposited(&mut self, event: &Deposited) {
        self.cents += event.cents;
    }

    #[command]
    fn deposit(&self, command: &Deposit) -> Result<Deposited, std::convert::Infallible> {
        Ok(Deposited { cents: command.0 })
    }

    #[command]
    fn credit(&self, command: &Credit) -> Result<Deposited, std::convert::Infallible> {
        Ok(Deposited {
            cents: command.cents,
        })
    }
}

/// Sums the deposits it sees, and names their streams.
#[derive(Debug, Default)]
pub struct Ledger {
    pub streams: Vec<String>,
    pub cents: i64,
}

#[factum::projection(name = "ledger")]
impl Ledger {
    #[handle]
    async fn deposited(
        &mut self,
        event: &Deposited,
        envelope: &Envelope,
        _: &mut Tx<'_>,
    ) -> Result<(), std::convert::Infallible> {
        self.streams.push(envelope.stream_id.clone());
        self.cents += event.cents;
        Ok(())
    }
}

#[factum::event]
#[derive(Debug, Clone, PartialEq)]
pub struct Opened {
    pub account: String,
    pub cents: i64,
}

/// Welcomes each opened account: an instance per account name, which two tenants may share.
#[derive(Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Welcome {
    pub cents: i64,
}

/// A welcome bonus, credited by the saga to the opened account.
#[factum::command]
#[derive(Debug, Clone, PartialEq)]
pub struct Credit {
    pub cents: i64,
}

#[factum::saga(name = "welcome", commands(Credit))]
impl Welcome {
    #[start(by = account)]
    fn opened(&mut self, event: &Opened, context: &mut factum::saga::SagaContext<Self>) {
        self.cents = event.cents;
        context.send(format!("bonus/{}", event.account), Credit { cents: 1 });
    }
}

#[factum::event]
#[derive(Debug, Clone, PartialEq)]
pub struct Registered {
    #[pii(subject)]
    pub customer: String,
    #[pii(replacement = "[erased]".to_owned())]
    pub name: String,
}

pub fn deposit(cents: i64) -> NewEvent {
    NewEvent::of(&Deposited { cents }).unwrap()
}
