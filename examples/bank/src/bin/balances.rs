//! Runs the `account_balances` projection until it has caught up with the store.
//!
//! `DATABASE_URL` names the store: a PostgreSQL database (`FACTUM_SCHEMA` names the store's
//! schema, default `factum`; the balances go to the table `balances` of that schema) or a SQLite
//! file (`sqlite://path`; the table `balances`). Used by the crash test, which kills it at
//! random points.

use bank::projections::AccountBalances;
use factum::projection::ProjectionRunner;
use factum::store::{PostgresStore, SqlStore, SqliteStore};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL")
        .map_err(|_| "set DATABASE_URL to the store's database (postgres:// or sqlite://)")?;
    let batch_size = std::env::var("BATCH_SIZE")
        .ok()
        .and_then(|size| size.parse().ok())
        .unwrap_or(500);
    let handled = if url.starts_with("sqlite:") {
        let store = SqliteStore::connect(&url).await?;
        catch_up(store, AccountBalances::new("balances"), batch_size).await?
    } else {
        let schema = std::env::var("FACTUM_SCHEMA").unwrap_or_else(|_| "factum".to_owned());
        let pool = sqlx::PgPool::connect(&url).await?;
        let store = PostgresStore::with_schema(pool, &schema)?;
        let projection = AccountBalances::new(format!("\"{schema}\".balances"));
        catch_up(store, projection, batch_size).await?
    };
    println!("caught up: {handled} events handled");
    Ok(())
}

/// Migrates the store, creates the table, and catches up.
async fn catch_up<S: SqlStore>(
    store: S,
    projection: AccountBalances,
    batch_size: usize,
) -> Result<u64, Box<dyn std::error::Error>> {
    store.migrate().await?;
    let mut transaction = store.begin().await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(projection.create_table()))
        .execute(&mut transaction.tx())
        .await?;
    transaction.commit().await?;
    let mut runner = ProjectionRunner::new(store, projection).batch_size(batch_size);
    Ok(runner.catch_up().await?)
}
