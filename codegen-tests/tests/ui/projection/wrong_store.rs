use factum::projection::ProjectionRunner;
use factum::{event, projection, Envelope};

#[event]
pub struct Deposited {
    pub cents: i64,
}

#[derive(Debug, thiserror::Error)]
#[error("failed")]
pub struct Failed;

/// Written for PostgreSQL: its handlers take PostgreSQL's connection.
pub struct PgOnly;

#[projection(name = "pg_only")]
impl PgOnly {
    #[handle]
    async fn deposited(&mut self, _event: &Deposited, _envelope: &Envelope, _tx: &mut sqlx::PgConnection) -> Result<(), Failed> {
        Ok(())
    }
}

fn runs_on_postgres(store: factum::store::PostgresStore) {
    let _ = ProjectionRunner::new(store, PgOnly);
}

fn runs_on_sqlite(store: factum::store::SqliteStore) {
    let _ = ProjectionRunner::new(store, PgOnly);
}

fn main() {}
