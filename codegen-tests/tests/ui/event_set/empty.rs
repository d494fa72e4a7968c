use factum::event;

#[event]
pub enum AccountEvent {}

fn main() {}
