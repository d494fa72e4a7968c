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

// A misspelled key in an inline projection's attribute: that is the one error, not also one
// where it is registered as an inline projection.
pub struct Balances;

#[projection(name = "balances", inline, verison = 2)]
impl Balances {
    #[handle]
    async fn deposited(&mut self, _event: &Deposited, _envelope: &Envelope, _tx: &mut Tx<'_>) -> Result<(), Failed> {
        Ok(())
    }
}

fn register<P: factum::projection::InlineProjection>() {}

fn main() {
    register::<Balances>();
}
