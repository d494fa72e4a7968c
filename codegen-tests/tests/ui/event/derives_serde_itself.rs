use factum::event;
use serde::{Deserialize, Serialize};

#[event]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MoneyDeposited {
    pub amount: u64,
}

fn main() {}
