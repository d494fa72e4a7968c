use factum::{rejected, start, timeout};

#[start(by = order_id)]
fn placed() {}

pub struct Fulfillment;

impl Fulfillment {
    #[timeout]
    fn timed_out(&mut self) {}

    #[rejected]
    fn rejected(&mut self) {}
}

#[timeout]
pub union NotAMessage {
    a: u32,
}

fn main() {}
