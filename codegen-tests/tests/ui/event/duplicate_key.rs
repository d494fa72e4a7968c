use factum::event;

#[event(version = 2, name = "Deposited", version = 3)]
pub struct MoneyDeposited {
    pub amount: u64,
}

fn main() {}
