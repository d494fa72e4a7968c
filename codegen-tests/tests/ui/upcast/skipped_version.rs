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

#[upcast]
fn to_cents(old: MoneyWithdrawnV1) -> MoneyWithdrawnV2 {
    MoneyWithdrawnV2 { cents: old.dollars * 100 }
}

#[upcast]
fn straight_to_v3(old: MoneyWithdrawnV1) -> MoneyWithdrawn {
    MoneyWithdrawn { cents: old.dollars * 100, channel: "teller".to_owned() }
}

fn main() {}
