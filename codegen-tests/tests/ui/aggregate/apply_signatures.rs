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

#[aggregate(events = CounterEvent)]
impl Counter {
    #[apply]
    fn incremented(&self, event: &Incremented) {
        let _ = event;
    }

    #[apply]
    fn reset(&mut self, _: Reset) {
        self.value = 0;
    }

    #[apply]
    fn checked(&mut self, event: &Incremented) -> Result<(), TooBig> {
        self.value += event.by;
        Ok(())
    }

    #[apply]
    fn two(&mut self, event: &Incremented, extra: u64) {
        self.value += event.by + extra;
    }

    #[apply]
    fn no_receiver(event: &Incremented) {
        let _ = event;
    }

    #[apply]
    fn generic<T>(&mut self, _: &Reset) {}
}

fn main() {}
