use factum::event;

#[event]
pub struct MoneyDeposited {
    pub amount: u64,
}

// Another struct claiming the same stored type name.
#[event(name = "MoneyDeposited")]
pub struct CashDeposited {
    pub amount: u64,
}

#[event]
pub enum AccountEvent {
    Deposited(MoneyDeposited),
    Cash(CashDeposited),
}

fn main() {}
