use factum::event;

#[event(name = "")]
pub struct MoneyDeposited {
    pub amount: u64,
}

#[event(name = "Money Withdrawn")]
pub struct MoneyWithdrawn {
    pub amount: u64,
}

#[event(name = MoneyClosed)]
pub struct AccountClosed;

fn main() {}
