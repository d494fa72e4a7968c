use factum::{projection, Envelope, Tx, event};

#[event]
pub struct Deposited {
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

/// Buffers, but forgets to say how to drop a rolled-back batch.
pub struct NoDiscard;

#[projection]
impl NoDiscard {
    #[handle]
    async fn deposited(&mut self, _event: &Deposited, _envelope: &Envelope, _tx: &mut Tx<'_>) -> Result<(), Failed> {
        Ok(())
    }

    #[flush]
    async fn flush(&mut self, _tx: &mut Tx<'_>) -> Result<(), Failed> {
        Ok(())
    }
}

/// Every signature wrong, two flushes, a flush through another connection.
pub struct Mistakes;

#[projection]
impl Mistakes {
    #[handle]
    async fn deposited(&mut self, _event: &Deposited, _envelope: &Envelope, _tx: &mut Tx<'_>) -> Result<(), Failed> {
        Ok(())
    }

    #[flush]
    fn not_async(&mut self, _tx: &mut Tx<'_>) -> Result<(), Failed> {
        Ok(())
    }

    #[flush]
    async fn second(&mut self, _tx: &mut Tx<'_>) -> Result<(), Failed> {
        Ok(())
    }

    #[discard]
    async fn discard(&self, _extra: u32) -> bool {
        true
    }
}

pub struct OtherConnectionFlush;

#[projection]
impl OtherConnectionFlush {
    #[handle]
    async fn deposited(&mut self, _event: &Deposited, _envelope: &Envelope, _tx: &mut Tx<'_>) -> Result<(), Failed> {
        Ok(())
    }

    #[flush]
    async fn flush(&mut self, _tx: &mut OtherConnection) -> Result<(), Failed> {
        Ok(())
    }

    #[discard]
    #[handle]
    fn discard(&mut self) {}
}

#[factum::discard]
fn stray() {}

fn main() {}
