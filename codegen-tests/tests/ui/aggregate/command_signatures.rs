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
    fn incremented(&mut self, event: &Incremented) {
        self.value += event.by;
    }

    #[apply]
    fn reset(&mut self, _: &Reset) {
        self.value = 0;
    }

    #[command]
    fn increment(&mut self, command: &Increment) -> Result<Incremented, TooBig> {
        Ok(Incremented { by: command.by })
    }

    #[command]
    fn by_value(&self, command: Increment) -> Result<Incremented, TooBig> {
        Ok(Incremented { by: command.by })
    }

    #[command]
    fn nothing_returned(&self, _command: &Reset) {}

    #[command]
    async fn remote(&self, command: &Increment) -> Result<Incremented, TooBig> {
        Ok(Incremented { by: command.by })
    }

    #[command]
    fn no_command(&self) -> Result<Reset, TooBig> {
        Ok(Reset)
    }
}

fn main() {}
