use factum::event;

// Commands, not facts.
#[event]
pub struct CreateOrder {
    pub order_id: String,
}

#[event]
pub struct OrderCreate {
    pub order_id: String,
}

// The stored name is the one checked.
#[event(name = "WithdrawMoney")]
pub struct MoneyWithdrawn {
    pub amount: u64,
}

// A state, not something that happened.
#[event(version = 2)]
pub struct PaymentProcessing {
    pub order_id: String,
}

// Opted out: compiles.
#[event(any_name)]
pub struct Heartbeat;

// Past tense, with a version tag (ignored): compiles.
#[event(name = "MoneyDepositedV2")]
pub struct MoneyDepositedV2 {
    pub amount: u64,
}

#[event(any_name = true)]
pub struct Tick;

fn main() {}
