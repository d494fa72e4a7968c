//! Projections registered in a tool: rebuilt from the start (their `#[reset]` clears the read
//! model; a progress bar shows the catch-up), and their parked streams retried or skipped. A
//! projection runs on the stores its handlers are written for ([`Projection::STORE`]): the
//! registration makes a runner of whichever store the tool was pointed at.

use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::time::Duration;

use super::CliError;
use super::store::AnyStore;
use crate::projection::{Projection, ProjectionRunner, Reset, RetryOutcome, RunnerError};
use crate::store::SqlStore;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the tool can do with a registered projection.
pub(super) trait Registered: Send + Sync {
    /// Whether it runs on this store.
    fn runs_on(&self, store: &AnyStore) -> bool;

    /// Clears the read model (its `#[reset]`), the checkpoint and the dead letters, then catches
    /// up from the start. Returns the events handled.
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

/// A registered projection: how to make it.
pub(super) struct Registration<P, F> {
    pub new: F,
    pub projection: PhantomData<fn() -> P>,
}

/// What the tool does with a runner, whatever its store.
trait Job<P>: Send {
    type Output;

    fn run<S: SqlStore>(
        self,
        runner: ProjectionRunner<S, P>,
    ) -> impl Future<Output = Result<Self::Output, CliError>> + Send;
}

/// Clears the read model and the version's progress, and catches up from the start.
struct Rebuild<'a>(&'a AnyStore);

impl<P: Projection + Reset + Sync> Job<P> for Rebuild<'_> {
    type Output = u64;

    async fn run<S: SqlStore>(self, mut runner: ProjectionRunner<S, P>) -> Result<u64, CliError> {
        with_progress::<P>(self.0, runner.rebuild()).await
    }
}

/// Retries a parked stream.
struct Retry<'a>(&'a str);

impl<P: Projection + Sync> Job<P> for Retry<'_> {
    type Output = RetryOutcome;

    async fn run<S: SqlStore>(
        self,
        mut runner: ProjectionRunner<S, P>,
    ) -> Result<RetryOutcome, CliError> {
        Ok(runner.retry_parked(self.0).await?)
    }
}

/// Skips a parked stream's first event.
struct Skip<'a>(&'a str);

impl<P: Projection + Sync> Job<P> for Skip<'_> {
    type Output = Option<u64>;

    async fn run<S: SqlStore>(
        self,
        mut runner: ProjectionRunner<S, P>,
    ) -> Result<Option<u64>, CliError> {
        Ok(runner.skip_parked(self.0).await?)
    }
}

impl<P, F> Registration<P, F>
where
    P: Projection + Reset + Sync,
    F: Fn() -> P + Send + Sync,
{
    /// Runs `job` with a runner of the projection on `store`, which it must run on (checked
    /// here, so the runner need not prove it at compile time).
    async fn run<J: Job<P>>(&self, store: &AnyStore, job: J) -> Result<J::Output, CliError> {
        if !self.runs_on(store) {
            return Err(wrong_store::<P>(store));
        }
        let projection = (self.new)();
        match store {
            AnyStore::Postgres(pg) => {
                job.run(ProjectionRunner::unchecked(pg.clone(), projection))
                    .await
            }
            AnyStore::Sqlite(sqlite) => {
                job.run(ProjectionRunner::unchecked(sqlite.clone(), projection))
                    .await
            }
        }
    }
}

impl<P, F> Registered for Registration<P, F>
where
    P: Projection + Reset + Sync,
    F: Fn() -> P + Send + Sync,
{
    fn runs_on(&self, store: &AnyStore) -> bool {
        P::STORE.is_none_or(|kind| kind == store.kind())
    }

    fn rebuild<'a>(&'a self, store: &'a AnyStore) -> BoxFuture<'a, Result<u64, CliError>> {
        Box::pin(self.run(store, Rebuild(store)))
    }

    fn retry<'a>(
        &'a self,
        store: &'a AnyStore,
        stream_id: &'a str,
    ) -> BoxFuture<'a, Result<RetryOutcome, CliError>> {
        Box::pin(self.run(store, Retry(stream_id)))
    }

    fn skip<'a>(
        &'a self,
        store: &'a AnyStore,
        stream_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<u64>, CliError>> {
        Box::pin(self.run(store, Skip(stream_id)))
    }
}

fn wrong_store<P: Projection>(store: &AnyStore) -> CliError {
    CliError::Usage(format!(
        "projection `{}` is written for another store than {} (its handlers take that store's connection)",
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
