use factum::event;

#[event]
pub struct MoneyDeposited {
    pub amount: u64,
}

#[event]
pub enum AccountEvent {
    Deposited(MoneyDeposited),
    AlsoDeposited(MoneyDeposited),
}

fn main() {}
