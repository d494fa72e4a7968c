use factum::event;
use serde::Serialize;

#[event(nmae = "Deposited", version = 0, version = 2)]
#[derive(Debug, Serialize)]
pub struct MoneyDeposited<T> {
    pub amount: T,
}

fn main() {}
