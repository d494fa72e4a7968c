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

// A projection that buffers without saying how to drop a rolled-back batch: that is the one
// error, not also one where the type is used as a projection.
pub struct Balances {
    pending: Vec<i64>,
}

#[projection(name = "balances")]
impl Balances {
    #[handle]
    async fn deposited(&mut self, event: &Deposited, _envelope: &Envelope, _tx: &mut Tx<'_>) -> Result<(), Failed> {
        self.pending.push(event.cents);
        Ok(())
    }

    #[flush]
    async fn flush(&mut self, _tx: &mut Tx<'_>) -> Result<(), Failed> {
        self.pending.clear();
        Ok(())
    }
}

fn runs<P: factum::projection::Projection>() {}

fn main() {
    runs::<Balances>();
}
