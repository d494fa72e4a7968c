use factum::{projection, Envelope, Tx, event};

#[event]
pub struct Deposited {
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

// An inline projection's transaction may still roll back: no side effects.
pub struct Mailer;

#[projection(inline)]
impl Mailer {
    #[handle(side_effects)]
    async fn deposited(&mut self, _event: &Deposited, _envelope: &Envelope) -> Result<(), Failed> {
        Ok(())
    }
}

// `inline` is a flag.
pub struct Flagged;

#[projection(inline = true)]
impl Flagged {
    #[handle]
    async fn deposited(&mut self, _event: &Deposited, _envelope: &Envelope, _tx: &mut Tx<'_>) -> Result<(), Failed> {
        Ok(())
    }
}

// Registering a projection that was not declared inline.
pub struct Balances;

#[projection]
impl Balances {
    #[handle]
    async fn deposited(&mut self, _event: &Deposited, _envelope: &Envelope, _tx: &mut Tx<'_>) -> Result<(), Failed> {
        Ok(())
    }
}

fn register<P: factum::projection::InlineProjection>(_projection: P) {}

fn main() {
    register(Balances);
}
