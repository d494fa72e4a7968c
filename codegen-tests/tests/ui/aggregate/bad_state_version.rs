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

#[aggregate(events = CounterEvent, state_version = 0)]
impl Counter {
    #[apply]
    fn incremented(&mut self, event: &Incremented) {
        self.value += event.by;
    }

    #[apply]
    fn reset(&mut self, _: &Reset) {
        self.value = 0;
    }
}

#[derive(Default)]
pub struct Tally {
    value: u64,
}

#[aggregate(events = CounterEvent, state_version = "2")]
impl Tally {
    #[apply]
    fn incremented(&mut self, event: &Incremented) {
        self.value += event.by;
    }

    #[apply]
    fn reset(&mut self, _: &Reset) {
        self.value = 0;
    }
}

fn main() {}
