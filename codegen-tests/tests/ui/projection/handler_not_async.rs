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

// One handler is not async: that is the one error, not also one where the type is used as a
// projection (the macro still emits a stub `Projection` implementation).
pub struct Balances;

#[projection(name = "balances")]
impl Balances {
    #[handle]
    async fn deposited(&mut self, _event: &Deposited, _envelope: &Envelope, _tx: &mut Tx<'_>) -> Result<(), Failed> {
        Ok(())
    }

    #[handle]
    fn withdrawn(&mut self, _event: &Withdrawn, _envelope: &Envelope, _tx: &mut Tx<'_>) -> Result<(), Failed> {
        Ok(())
    }
}

fn runs<P: factum::projection::Projection>() {}

fn main() {
    runs::<Balances>();
}
