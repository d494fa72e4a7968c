use factum::event;

#[event(nmae = "Deposited", version = 2)]
pub struct MoneyDeposited {
    pub amount: u64,
}

fn main() {}
