//! Runs the `account_balances` projection until it has caught up with the store.
//!
//! `DATABASE_URL` names the database, `FACTUM_SCHEMA` the store's schema (default `factum`); the
//! balances go to the table `balances` of that schema. Used by the crash test, which kills it at
//! random points.

use bank::projections::AccountBalances;
use factum::projection::ProjectionRunner;
use factum::store::PostgresStore;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL")
        .map_err(|_| "set DATABASE_URL to the PostgreSQL database of the store")?;
    let schema = std::env::var("FACTUM_SCHEMA").unwrap_or_else(|_| "factum".to_owned());
    let batch_size = std::env::var("BATCH_SIZE")
        .ok()
        .and_then(|size| size.parse().ok())
        .unwrap_or(500);
    let pool = sqlx::PgPool::connect(&url).await?;
    let store = PostgresStore::with_schema(pool, &schema)?;
    store.migrate().await?;
    let projection = AccountBalances::new(format!("\"{schema}\".balances"));
    sqlx::raw_sql(sqlx::AssertSqlSafe(projection.create_table()))
        .execute(store.pool())
        .await?;
    let mut runner = ProjectionRunner::new(store, projection).batch_size(batch_size);
    let handled = runner.catch_up().await?;
    println!("caught up: {handled} events handled");
    Ok(())
}
