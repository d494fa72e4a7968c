//! Projections registered in a tool: rebuilt from the start (with a progress bar), and their
//! parked streams retried or skipped. A projection is written for one store (its handlers take
//! that store's connection), so it is registered for that store.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::time::Duration;

use sqlx::{AssertSqlSafe, PgConnection, SqliteConnection};

use super::CliError;
use super::store::AnyStore;
use crate::projection::{Projection, ProjectionRunner, RetryOutcome, SqliteProjectionRunner};

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the tool can do with a registered projection.
pub(super) trait Registered: Send + Sync {
    /// Whether it runs on this store.
    fn runs_on(&self, store: &AnyStore) -> bool;

    /// Clears the read model and the checkpoint, then catches up from the start. Returns the
    /// events handled.
    fn rebuild<'a>(&'a self, store: &'a AnyStore) -> BoxFuture<'a, Result<u64, CliError>>;

    /// Handles a parked stream's events again, in order.
    fn retry<'a>(
        &'a self,
        store: &'a AnyStore,
        stream_id: &'a str,
    ) -> BoxFuture<'a, Result<RetryOutcome, CliError>>;

    /// Skips a parked stream's first event (kept on record).
    fn skip<'a>(
        &'a self,
        store: &'a AnyStore,
        stream_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<u64>, CliError>>;
}

/// A projection on PostgreSQL.
pub(super) struct OnPostgres<P, F> {
    pub new: F,
    pub reset: &'static str,
    pub projection: PhantomData<fn() -> P>,
}

/// A projection on SQLite.
pub(super) struct OnSqlite<P, F> {
    pub new: F,
    pub reset: &'static str,
    pub projection: PhantomData<fn() -> P>,
}

impl<P, F> Registered for OnPostgres<P, F>
where
    P: Projection<Connection = PgConnection> + Sync,
    F: Fn() -> P + Send + Sync,
{
    fn runs_on(&self, store: &AnyStore) -> bool {
        matches!(store, AnyStore::Postgres(_))
    }

    fn rebuild<'a>(&'a self, store: &'a AnyStore) -> BoxFuture<'a, Result<u64, CliError>> {
        Box::pin(async move {
            let AnyStore::Postgres(pg) = store else {
                return Err(wrong_store::<P>(store));
            };
            let mut transaction = pg.pool().begin().await.map_err(CliError::database)?;
            sqlx::raw_sql(AssertSqlSafe(self.reset))
                .execute(&mut *transaction)
                .await
                .map_err(CliError::database)?;
            for table in ["projection_checkpoints", "projection_dead_letters"] {
                sqlx::query(AssertSqlSafe(format!(
                    "DELETE FROM \"{}\".{table} WHERE projection = $1 AND version = $2",
                    pg.schema()
                )))
                .bind(P::NAME)
                .bind(i32::try_from(P::VERSION).unwrap_or(i32::MAX))
                .execute(&mut *transaction)
                .await
                .map_err(CliError::database)?;
            }
            transaction.commit().await.map_err(CliError::database)?;
            let mut runner = ProjectionRunner::new(pg.clone(), (self.new)());
            with_progress::<P>(store, runner.catch_up()).await
        })
    }

    fn retry<'a>(
        &'a self,
        store: &'a AnyStore,
        stream_id: &'a str,
    ) -> BoxFuture<'a, Result<RetryOutcome, CliError>> {
        Box::pin(async move {
            let AnyStore::Postgres(pg) = store else {
                return Err(wrong_store::<P>(store));
            };
            let mut runner = ProjectionRunner::new(pg.clone(), (self.new)());
            Ok(runner.retry_parked(stream_id).await?)
        })
    }

    fn skip<'a>(
        &'a self,
        store: &'a AnyStore,
        stream_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<u64>, CliError>> {
        Box::pin(async move {
            let AnyStore::Postgres(pg) = store else {
                return Err(wrong_store::<P>(store));
            };
            let mut runner = ProjectionRunner::new(pg.clone(), (self.new)());
            Ok(runner.skip_parked(stream_id).await?)
        })
    }
}

impl<P, F> Registered for OnSqlite<P, F>
where
    P: Projection<Connection = SqliteConnection> + Sync,
    F: Fn() -> P + Send + Sync,
{
    fn runs_on(&self, store: &AnyStore) -> bool {
        matches!(store, AnyStore::Sqlite(_))
    }

    fn rebuild<'a>(&'a self, store: &'a AnyStore) -> BoxFuture<'a, Result<u64, CliError>> {
        Box::pin(async move {
            let AnyStore::Sqlite(sqlite) = store else {
                return Err(wrong_store::<P>(store));
            };
            let mut transaction = sqlite
                .pool()
                .begin_with("BEGIN IMMEDIATE")
                .await
                .map_err(CliError::database)?;
            sqlx::raw_sql(AssertSqlSafe(self.reset))
                .execute(&mut *transaction)
                .await
                .map_err(CliError::database)?;
            for table in ["projection_checkpoints", "projection_dead_letters"] {
                sqlx::query(AssertSqlSafe(format!(
                    "DELETE FROM {table} WHERE projection = ?1 AND version = ?2"
                )))
                .bind(P::NAME)
                .bind(i64::from(P::VERSION))
                .execute(&mut *transaction)
                .await
                .map_err(CliError::database)?;
            }
            transaction.commit().await.map_err(CliError::database)?;
            let mut runner = SqliteProjectionRunner::new(sqlite.clone(), (self.new)());
            with_progress::<P>(store, runner.catch_up()).await
        })
    }

    fn retry<'a>(
        &'a self,
        store: &'a AnyStore,
        stream_id: &'a str,
    ) -> BoxFuture<'a, Result<RetryOutcome, CliError>> {
        Box::pin(async move {
            let AnyStore::Sqlite(sqlite) = store else {
                return Err(wrong_store::<P>(store));
            };
            let mut runner = SqliteProjectionRunner::new(sqlite.clone(), (self.new)());
            Ok(runner.retry_parked(stream_id).await?)
        })
    }

    fn skip<'a>(
        &'a self,
        store: &'a AnyStore,
        stream_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<u64>, CliError>> {
        Box::pin(async move {
            let AnyStore::Sqlite(sqlite) = store else {
                return Err(wrong_store::<P>(store));
            };
            let mut runner = SqliteProjectionRunner::new(sqlite.clone(), (self.new)());
            Ok(runner.skip_parked(stream_id).await?)
        })
    }
}

fn wrong_store<P: Projection>(store: &AnyStore) -> CliError {
    CliError::Usage(format!(
        "projection `{}` is not registered for {} in this tool",
        P::NAME,
        store.describe()
    ))
}

/// Runs a catch-up while a progress bar (on a terminal) shows the checkpoint against the head.
async fn with_progress<P: Projection>(
    store: &AnyStore,
    catch_up: impl Future<Output = Result<u64, crate::projection::RunnerError>>,
) -> Result<u64, CliError> {
    let head = store.head().await?;
    let bar = indicatif::ProgressBar::new(head);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {pos}/{len} events' positions ({eta} left)",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(format!("rebuilding {}", P::NAME));
    let ticker = async {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Ok(checkpoints) = store.checkpoints().await
                && let Some(checkpoint) = checkpoints
                    .iter()
                    .find(|c| c.projection == P::NAME && c.version == P::VERSION)
            {
                bar.set_position(checkpoint.position.min(head));
            }
        }
    };
    let handled = tokio::select! {
        handled = catch_up => handled,
        () = ticker => unreachable_ticker(),
    };
    bar.finish_and_clear();
    Ok(handled?)
}

/// The ticker loops until the catch-up ends.
fn unreachable_ticker() -> Result<u64, crate::projection::RunnerError> {
    Ok(0)
}
