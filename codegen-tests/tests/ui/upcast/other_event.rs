use factum::{event, upcast};

/// Version 1 stored whole dollars.
#[event(name = "MoneyWithdrawn", version = 1)]
pub struct MoneyWithdrawnV1 {
    pub dollars: u64,
}

/// Version 2 stores cents.
#[event(name = "MoneyWithdrawn", version = 2)]
pub struct MoneyWithdrawnV2 {
    pub cents: u64,
}

/// Version 3 adds the channel.
#[event(version = 3)]
pub struct MoneyWithdrawn {
    pub cents: u64,
    pub channel: String,
}

#[event]
pub struct AccountClosed;

#[upcast]
fn to_cents(old: MoneyWithdrawnV1) -> MoneyWithdrawnV2 {
    MoneyWithdrawnV2 { cents: old.dollars * 100 }
}

#[upcast]
fn add_channel(old: MoneyWithdrawnV2) -> MoneyWithdrawn {
    MoneyWithdrawn { cents: old.cents, channel: "teller".to_owned() }
}

#[upcast]
fn close(_old: AccountClosed) -> MoneyWithdrawnV2 {
    MoneyWithdrawnV2 { cents: 0 }
}

fn main() {}
