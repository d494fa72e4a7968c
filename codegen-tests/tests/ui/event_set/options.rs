use factum::event;

#[event]
pub struct AccountOpened;

#[event(version = 2, name = "Account")]
pub enum AccountEvent {
    Opened(AccountOpened),
}

fn main() {}
