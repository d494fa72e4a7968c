use factum::projection::{Projection, SqliteProjectionRunner};
use factum::store::SqliteStore;
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

// The only handler is not async, so no handler says where the projection runs: that is still
// the one error, not also one where a runner is built for it or its trait items are used (the
// macro emits a stub `Projection` implementation that runs on every store).
pub struct Balances;

#[projection(name = "balances")]
impl Balances {
    #[handle]
    fn deposited(&mut self, _event: &Deposited, _envelope: &Envelope, _tx: &mut Tx<'_>) -> Result<(), Failed> {
        Ok(())
    }
}

fn runner(store: SqliteStore) -> SqliteProjectionRunner<Balances> {
    SqliteProjectionRunner::new(store, Balances)
}

fn main() {
    let _ = runner;
    let _ = <Balances as Projection>::NAME;
}
