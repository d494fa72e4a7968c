use factum::event;

#[event(version = 0)]
pub struct MoneyDeposited {
    pub amount: u64,
}

fn main() {}
