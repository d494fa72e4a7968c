use factum::{aggregate, event};

#[event]
pub struct Incremented {
    pub by: u64,
}

#[event]
pub struct Reset;

#[event]
pub enum CounterEvent {
    Incremented(Incremented),
    Reset(Reset),
}

pub struct Increment {
    pub by: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("too big")]
pub struct TooBig;

#[derive(Default)]
pub struct Counter {
    value: u64,
}

impl Counter {
    #[factum::apply]
    fn incremented(&mut self, event: &Incremented) {
        self.value += event.by;
    }
}

fn main() {}
