use factum::{projection, Envelope, Tx, event};

#[event]
pub struct Deposited {
    pub cents: i64,
}

#[event]
pub struct Withdrawn {
    pub cents: i64,
}

pub struct OtherConnection;

#[derive(Debug)]
pub struct Failed;

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("failed")
    }
}

impl std::error::Error for Failed {}

pub struct Balances;

#[projection(name = "balances")]
impl Balances {
    #[handle]
    fn not_async(&mut self, _event: &Deposited, _envelope: &Envelope, _tx: &mut Tx<'_>) -> Result<(), Failed> {
        Ok(())
    }

    #[handle]
    async fn by_value(&mut self, _event: Withdrawn, _envelope: &Envelope, _tx: &mut Tx<'_>) -> Result<(), Failed> {
        Ok(())
    }

    #[handle]
    async fn no_transaction(&mut self, _event: &Withdrawn, _envelope: &Envelope) -> Result<(), Failed> {
        Ok(())
    }

    #[handle]
    async fn shared_self(&self, _event: &Withdrawn, _envelope: &Envelope, _tx: &mut Tx<'_>) -> Result<(), Failed> {
        Ok(())
    }
}

fn main() {}
