use factum::event;

#[event(version = "2")]
pub struct MoneyDeposited {
    pub amount: u64,
}

#[event(version = 1.5)]
pub struct MoneyWithdrawn {
    pub amount: u64,
}

#[event(version)]
pub struct AccountClosed;

fn main() {}
