use factum::{projection, Envelope, Tx, event};

#[event]
pub struct Deposited {
    pub cents: i64,
}

#[event]
pub struct Withdrawn {
    pub cents: i64,
}


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
    async fn deposited(&mut self, _event: &Deposited, _envelope: &Envelope, _tx: &mut Tx<'_>) -> Result<(), Failed> {
        Ok(())
    }

    #[handle = "side_effects"]
    async fn withdrawn(&mut self, _event: &Withdrawn, _envelope: &Envelope, _tx: &mut Tx<'_>) -> Result<(), Failed> {
        Ok(())
    }

    #[flush(now)]
    async fn flush(&mut self, _tx: &mut Tx<'_>) -> Result<(), Failed> {
        Ok(())
    }

    #[discard]
    fn discard(&mut self) {}
}

fn main() {}
