use factum::{projection, Envelope, event};

#[event]
pub struct Deposited {
    pub cents: i64,
}

#[event]
pub struct Withdrawn {
    pub cents: i64,
}

pub struct Connection;

#[derive(Debug)]
pub struct Failed;

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("failed")
    }
}

impl std::error::Error for Failed {}

pub struct Mailer;

#[projection]
impl Mailer {
    #[handle(side_effect)]
    async fn deposited(&mut self, _event: &Deposited, _envelope: &Envelope, _tx: &mut Connection) -> Result<(), Failed> {
        Ok(())
    }

    #[handle = "side_effects"]
    async fn withdrawn(&mut self, _event: &Withdrawn, _envelope: &Envelope, _tx: &mut Connection) -> Result<(), Failed> {
        Ok(())
    }

    #[flush(now)]
    async fn flush(&mut self, _tx: &mut Connection) -> Result<(), Failed> {
        Ok(())
    }

    #[discard]
    fn discard(&mut self) {}
}

fn main() {}
