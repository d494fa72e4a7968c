//! Older versions of the account's events, kept so that events stored by earlier releases are
//! read as the current version (see `factum::upcast`).

use factum::{event, upcast};

use crate::{Channel, MoneyWithdrawn};

/// `MoneyWithdrawn` as first released: amounts in whole dollars.
#[event(name = "MoneyWithdrawn", version = 1)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoneyWithdrawnV1 {
    pub amount: u64,
    pub balance_after: u64,
}

/// `MoneyWithdrawn` version 2: amounts in cents.
#[event(name = "MoneyWithdrawn", version = 2)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoneyWithdrawnV2 {
    pub amount: u64,
    pub balance_after: u64,
}

#[upcast]
fn dollars_to_cents(old: MoneyWithdrawnV1) -> MoneyWithdrawnV2 {
    MoneyWithdrawnV2 {
        amount: old.amount * 100,
        balance_after: old.balance_after * 100,
    }
}

/// Before version 3 every withdrawal was made at the teller.
#[upcast]
fn at_the_teller(old: MoneyWithdrawnV2) -> MoneyWithdrawn {
    MoneyWithdrawn {
        amount: old.amount,
        balance_after: old.balance_after,
        channel: Channel::Teller,
    }
}
