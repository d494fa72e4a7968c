use factum::event;

#[event]
pub struct AccountOpened;

#[event]
pub struct MoneyDeposited {
    pub amount: u64,
}

#[event]
pub enum AccountEvent {
    Opened(AccountOpened),
    Closed,
    Deposited { amount: u64 },
    Moved(MoneyDeposited, u64),
}

fn main() {}
