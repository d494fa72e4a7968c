use factum::event;

#[event]
fn money_deposited() {}

fn main() {}
