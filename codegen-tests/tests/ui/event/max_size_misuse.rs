use factum::event;

#[event(max_size = 0)]
pub struct MoneyDeposited {
    pub amount: u64,
}

#[event(max_size = "4 KiB")]
pub struct MoneyWithdrawn {
    pub amount: u64,
}

#[event(max_size = 4096, max_size = 8192)]
pub struct AccountClosed {
    pub reason: String,
}

#[event(max_size = 4096)]
pub enum AccountEvent {
    MoneyDeposited(MoneyDeposited),
    MoneyWithdrawn(MoneyWithdrawn),
}

fn main() {}
