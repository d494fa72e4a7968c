//! Projections registered in a tool: rebuilt from the start (with a progress bar), and their
//! parked streams retried or skipped. A projection is written for one store (its handlers take
//! that store's connection), so it is registered for that store: [`StoreRunner`] is what
//! differs between the stores, [`Registration`] what the tool does with either.

use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::time::Duration;

use sqlx::{AssertSqlSafe, PgConnection, SqliteConnection};

use super::CliError;
use super::store::AnyStore;
use crate::error::Error;
use crate::projection::{
    Projection, ProjectionRunner, RetryOutcome, RunnerError, SqliteProjectionRunner,
};

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

/// A projection runner of one store, as the tool uses it.
pub(super) trait StoreRunner: Sized + Send {
    type Projection: Projection;

    /// A runner of `projection` on `store`, if it is this runner's store.
    fn on(store: &AnyStore, projection: Self::Projection) -> Option<Self>;

    /// Runs `reset` (clearing the read model) and deletes the projection's checkpoint and
    /// dead letters, in one transaction.
    fn reset<'a>(store: &'a AnyStore, reset: &'a str) -> BoxFuture<'a, Result<(), CliError>>;

    fn catch_up(&mut self) -> BoxFuture<'_, Result<u64, RunnerError>>;

    fn retry_parked<'a>(
        &'a mut self,
        stream_id: &'a str,
    ) -> BoxFuture<'a, Result<RetryOutcome, Error>>;

    fn skip_parked<'a>(
        &'a mut self,
        stream_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<u64>, Error>>;
}

impl<P> StoreRunner for ProjectionRunner<P>
where
    P: Projection<Connection = PgConnection> + Sync,
{
    type Projection = P;

    fn on(store: &AnyStore, projection: P) -> Option<Self> {
        match store {
            AnyStore::Postgres(pg) => Some(Self::new(pg.clone(), projection)),
            AnyStore::Sqlite(_) => None,
        }
    }

    fn reset<'a>(store: &'a AnyStore, reset: &'a str) -> BoxFuture<'a, Result<(), CliError>> {
        Box::pin(async move {
            let AnyStore::Postgres(pg) = store else {
                return Err(wrong_store::<P>(store));
            };
            let mut transaction = pg.pool().begin().await.map_err(CliError::database)?;
            sqlx::raw_sql(AssertSqlSafe(reset))
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
            transaction.commit().await.map_err(CliError::database)
        })
    }

    fn catch_up(&mut self) -> BoxFuture<'_, Result<u64, RunnerError>> {
        Box::pin(Self::catch_up(self))
    }

    fn retry_parked<'a>(
        &'a mut self,
        stream_id: &'a str,
    ) -> BoxFuture<'a, Result<RetryOutcome, Error>> {
        Box::pin(Self::retry_parked(self, stream_id))
    }

    fn skip_parked<'a>(
        &'a mut self,
        stream_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<u64>, Error>> {
        Box::pin(Self::skip_parked(self, stream_id))
    }
}

impl<P> StoreRunner for SqliteProjectionRunner<P>
where
    P: Projection<Connection = SqliteConnection> + Sync,
{
    type Projection = P;

    fn on(store: &AnyStore, projection: P) -> Option<Self> {
        match store {
            AnyStore::Sqlite(sqlite) => Some(Self::new(sqlite.clone(), projection)),
            AnyStore::Postgres(_) => None,
        }
    }

    fn reset<'a>(store: &'a AnyStore, reset: &'a str) -> BoxFuture<'a, Result<(), CliError>> {
        Box::pin(async move {
            let AnyStore::Sqlite(sqlite) = store else {
                return Err(wrong_store::<P>(store));
            };
            let mut transaction = sqlite
                .pool()
                .begin_with("BEGIN IMMEDIATE")
                .await
                .map_err(CliError::database)?;
            sqlx::raw_sql(AssertSqlSafe(reset))
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
            transaction.commit().await.map_err(CliError::database)
        })
    }

    fn catch_up(&mut self) -> BoxFuture<'_, Result<u64, RunnerError>> {
        Box::pin(Self::catch_up(self))
    }

    fn retry_parked<'a>(
        &'a mut self,
        stream_id: &'a str,
    ) -> BoxFuture<'a, Result<RetryOutcome, Error>> {
        Box::pin(Self::retry_parked(self, stream_id))
    }

    fn skip_parked<'a>(
        &'a mut self,
        stream_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<u64>, Error>> {
        Box::pin(Self::skip_parked(self, stream_id))
    }
}

/// A projection registered for the store of runner `R`: how to make it, and the SQL that
/// clears its read model.
pub(super) struct Registration<R, F> {
    pub new: F,
    pub reset: &'static str,
    pub runner: PhantomData<fn() -> R>,
}

impl<R, F> Registration<R, F>
where
    R: StoreRunner,
    F: Fn() -> R::Projection + Send + Sync,
{
    fn runner(&self, store: &AnyStore) -> Result<R, CliError> {
        R::on(store, (self.new)()).ok_or_else(|| wrong_store::<R::Projection>(store))
    }
}

impl<R, F> Registered for Registration<R, F>
where
    R: StoreRunner,
    F: Fn() -> R::Projection + Send + Sync,
{
    fn runs_on(&self, store: &AnyStore) -> bool {
        R::on(store, (self.new)()).is_some()
    }

    fn rebuild<'a>(&'a self, store: &'a AnyStore) -> BoxFuture<'a, Result<u64, CliError>> {
        Box::pin(async move {
            let mut runner = self.runner(store)?;
            R::reset(store, self.reset).await?;
            with_progress::<R::Projection>(store, runner.catch_up()).await
        })
    }

    fn retry<'a>(
        &'a self,
        store: &'a AnyStore,
        stream_id: &'a str,
    ) -> BoxFuture<'a, Result<RetryOutcome, CliError>> {
        Box::pin(async move { Ok(self.runner(store)?.retry_parked(stream_id).await?) })
    }

    fn skip<'a>(
        &'a self,
        store: &'a AnyStore,
        stream_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<u64>, CliError>> {
        Box::pin(async move { Ok(self.runner(store)?.skip_parked(stream_id).await?) })
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
    catch_up: impl Future<Output = Result<u64, RunnerError>>,
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
    let handled = tokio::select! {
        handled = catch_up => handled,
        never = tick::<P>(store, &bar, head) => match never {},
    };
    bar.finish_and_clear();
    Ok(handled?)
}

/// Moves the progress bar to the checkpoint, every 200 ms, until dropped.
async fn tick<P: Projection>(
    store: &AnyStore,
    bar: &indicatif::ProgressBar,
    head: u64,
) -> Infallible {
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
}
