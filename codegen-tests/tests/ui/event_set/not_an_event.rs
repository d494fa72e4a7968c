use factum::event;

#[event]
pub struct AccountOpened;

pub struct MoneyDeposited {
    pub amount: u64,
}

#[event]
pub enum AccountEvent {
    Opened(AccountOpened),
    Deposited(MoneyDeposited),
}

fn main() {}
