use factum::{projection, Envelope, Tx, event};

#[event]
pub struct Closed {
    pub n: u64,
}

#[derive(Debug)]
pub struct Failed;

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("failed")
    }
}

impl std::error::Error for Failed {}

// A side effect runs after its batch commits, outside any transaction: it takes none.
pub struct Mailer;

#[projection(name = "mailer")]
impl Mailer {
    #[handle(side_effects)]
    async fn closed(&mut self, _event: &Closed, _envelope: &Envelope, _tx: &mut Tx<'_>) -> Result<(), Failed> {
        Ok(())
    }
}

// Without one, and alone in its projection, it runs on either store.
pub struct Farewells;

#[projection(name = "farewells")]
impl Farewells {
    #[handle(side_effects)]
    async fn closed(&mut self, _event: &Closed, _envelope: &Envelope) -> Result<(), Failed> {
        Ok(())
    }
}

fn runs_on_both<P: factum::projection::RunsOn<factum::store::PostgresStore> + factum::projection::RunsOn<factum::store::SqliteStore>>() {}

fn main() {
    runs_on_both::<Farewells>();
}
