use factum::{event, projection, Envelope, Tx};

#[event]
pub struct Deposited {
    pub cents: i64,
}

#[derive(Debug, thiserror::Error)]
#[error("failed")]
pub struct Failed;

pub struct Twice;

#[projection(name = "twice")]
impl Twice {
    #[handle]
    async fn deposited(&mut self, _event: &Deposited, _envelope: &Envelope, _tx: &mut Tx<'_>) -> Result<(), Failed> {
        Ok(())
    }

    #[reset]
    fn not_async(&mut self, _tx: &mut Tx<'_>) -> Result<(), Failed> {
        Ok(())
    }

    #[reset]
    async fn again(&mut self, _tx: &mut Tx<'_>) -> Result<(), Failed> {
        Ok(())
    }
}

/// A projection without `#[reset]`: it cannot be rebuilt from the start by clearing itself.
pub struct NoReset;

#[projection(name = "no_reset")]
impl NoReset {
    #[handle]
    async fn deposited(&mut self, _event: &Deposited, _envelope: &Envelope, _tx: &mut Tx<'_>) -> Result<(), Failed> {
        Ok(())
    }
}

fn rebuilds<P: factum::projection::Reset>() {}

fn main() {
    rebuilds::<NoReset>();
}
