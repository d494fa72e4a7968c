use factum::event;

#[event(version = 4294967296)]
pub struct MoneyDeposited {
    pub amount: u64,
}

#[event(version = -1)]
pub struct MoneyWithdrawn {
    pub amount: u64,
}

#[event(version = 2u8)]
pub struct AccountClosed;

fn main() {}
