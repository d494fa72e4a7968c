//! The projection runner, written once for both SQL stores: what it is made of and how it is
//! configured. Its work is in the modules beside: a batch committed with the checkpoint
//! (`batch`), failing batches retried and their failing event's stream parked (`dead_letter`),
//! a new version built beside the active one (`versions`), the lease, catch-up and live
//! following (`follow`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::retry::{Failure, Retries};
use super::sql::{ProjectionSql, Statement};
use super::status::RunnerState;
use super::{Projection, RunsOn};
use crate::error::Error;
use crate::position::FeedPosition;
use crate::store::backend::columns;
use crate::store::{FeedBatch, SqlStore};

/// Runs one projection against a SQL store: [`PostgresStore`](crate::store::PostgresStore)
/// ([`PgProjectionRunner`]) or [`SqliteStore`](crate::store::SqliteStore)
/// ([`SqliteProjectionRunner`]).
///
/// ```no_run
/// # async fn run<P: factum::projection::Projection + factum::projection::RunsOn<factum::store::SqliteStore>>(
/// #     store: factum::store::SqliteStore, projection: P,
/// # ) -> Result<(), factum::projection::RunnerError> {
/// use factum::projection::ProjectionRunner;
///
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// // Elsewhere, on SIGTERM: `stop.send(())`.
/// # drop(stop);
/// let shutdown = async { stopped.await.ok(); };
/// ProjectionRunner::new(store, projection).batch_size(500).run(shutdown).await?;
/// # Ok(()) }
/// ```
pub struct ProjectionRunner<S, P> {
    pub(super) store: S,
    pub(super) projection: P,
    pub(super) sql: Arc<ProjectionSql>,
    pub(super) options: Options,
    /// The checkpoint as this runner last committed it (`None`: read it from the database).
    pub(super) position: Option<FeedPosition>,
    /// The batch after `position`, read while the previous one was being applied (with
    /// `limit`, which does not change before it is used or dropped).
    pub(super) read_ahead: Option<(FeedPosition, FeedBatch)>,
    /// How many events the next batch may hold: `batch_size`, doubled after each batch read
    /// full, up to `max_batch_size`; `batch_size` again after one read short, and whenever
    /// the runner reads afresh (a failure, a restart, a rebuild).
    pub(super) limit: usize,
    /// Whether this version is building beside the active one (side effects off).
    pub(super) replaying: bool,
    /// Its state, for handles, and their requests.
    pub(super) control: Control<S, P>,
    /// The token this runner wrote into the checkpoint row when it took the lease (`None`:
    /// not running under the lease).
    pub(super) lease_token: Option<String>,
    /// The events of the batch being applied whose stored envelope does not read: they fail
    /// as undecodable events do, and their streams are parked.
    pub(super) undecodable: Vec<crate::store::Undecodable>,
}

impl<S: std::fmt::Debug, P: Projection> std::fmt::Debug for ProjectionRunner<S, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectionRunner")
            .field("projection", &P::NAME)
            .field("version", &P::VERSION)
            .field("store", &self.store)
            .field("options", &self.options)
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

/// A projection runner on PostgreSQL.
#[cfg(feature = "postgres")]
pub type PgProjectionRunner<P> = ProjectionRunner<crate::store::PostgresStore, P>;

/// A projection runner on SQLite.
#[cfg(feature = "sqlite")]
pub type SqliteProjectionRunner<P> = ProjectionRunner<crate::store::SqliteStore, P>;

/// How a runner runs.
#[derive(Debug, Clone)]
pub(super) struct Options {
    pub batch_size: usize,
    /// The most events a batch grows to while the runner stays behind (never below
    /// `batch_size`).
    pub max_batch_size: usize,
    pub poll_interval: Duration,
    pub lease_retry: Duration,
    pub retries: Retries,
    pub dead_letters: bool,
    /// How long one statement of a batch may run (PostgreSQL).
    pub statement_timeout: Duration,
    /// How long a batch's transaction may wait between statements (PostgreSQL): a handler
    /// stuck on something else is cut off, its transaction rolled back.
    pub idle_timeout: Duration,
    /// How often a running runner retries its parked streams by itself (`None`: never).
    pub redrive: Option<Duration>,
}

impl<S: SqlStore, P: Projection> ProjectionRunner<S, P> {
    /// A runner of `projection` on `store` (migrated).
    #[must_use]
    pub fn new(store: S, projection: P) -> Self
    where
        P: RunsOn<S>,
    {
        Self::unchecked(store, projection)
    }

    /// A runner whose projection may be written for another store (its handlers then fail):
    /// for registrations that check [`Projection::STORE`] themselves.
    pub(crate) fn unchecked(store: S, projection: P) -> Self {
        let sql = Arc::new(super::statements(&store.dialect()));
        let options = Options {
            batch_size: 500,
            max_batch_size: 5_000,
            poll_interval: Duration::from_millis(500),
            lease_retry: Duration::from_millis(500),
            retries: Retries::default(),
            dead_letters: true,
            statement_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            redrive: None,
        };
        Self {
            store,
            projection,
            sql,
            limit: options.batch_size,
            options,
            position: None,
            read_ahead: None,
            replaying: false,
            control: Control::new(P::NAME),
            lease_token: None,
            undecodable: Vec::new(),
        }
    }

    /// Events per transaction when the runner starts, follows the feed live, or falls behind
    /// (default 500). While it stays behind (each batch read full: catching up, rebuilding,
    /// after a burst), it doubles its batches up to [`max_batch_size`](Self::max_batch_size):
    /// each batch commits once, so fewer, larger transactions catch up faster. A batch read
    /// short brings it back to this size.
    #[must_use]
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.options.batch_size = batch_size.max(1);
        self.limit = self.options.batch_size;
        self
    }

    /// The most events per transaction while the runner stays behind (default 5,000; never
    /// below [`batch_size`](Self::batch_size), so `max_batch_size(1)` keeps every batch at
    /// that size). A batch and the one read ahead are held in memory together. A grown batch
    /// whose handler fails is not retried as it is: the runner reads it again at
    /// `batch_size`, where failures are retried, and a failing event is isolated (applied
    /// alone, then parked) among at most that many events; from then on its batches grow to
    /// half the failed batch at most (a `#[flush]` writing a batch in one statement past the
    /// database's bind limit settles below it).
    #[must_use]
    pub fn max_batch_size(mut self, max_batch_size: usize) -> Self {
        self.options.max_batch_size = max_batch_size.max(1);
        self
    }

    /// Forgets where it was reading: the checkpoint is read again, the batch read ahead is
    /// dropped, and batches start again at `batch_size`.
    pub(super) fn read_afresh(&mut self) {
        self.position = None;
        self.read_ahead = None;
        self.limit = self.options.batch_size;
    }

    /// The limit of the batch after one of `limit` events read full.
    pub(super) fn grown(&self, limit: usize) -> usize {
        limit
            .saturating_mul(2)
            .min(self.options.max_batch_size.max(self.options.batch_size))
    }

    /// How often to look for new events when no wake-up comes (default 500 ms).
    #[must_use]
    pub fn poll_interval(mut self, poll_interval: Duration) -> Self {
        self.options.poll_interval = poll_interval;
        self
    }

    /// How often a waiting runner tries to take over the lease (default 500 ms).
    #[must_use]
    pub fn lease_retry(mut self, lease_retry: Duration) -> Self {
        self.options.lease_retry = lease_retry;
        self
    }

    /// Quick retries of a batch whose handler fails with an error of no known class (with
    /// doubling backoff from `backoff`, capped at 2 s, jittered) before its failing event's
    /// stream is parked (default 3, from 100 ms). An event that does not decode parks at once.
    #[must_use]
    pub fn retries(mut self, max_retries: u32, backoff: Duration) -> Self {
        self.options.retries.max = max_retries;
        self.options.retries.backoff = backoff;
        self
    }

    /// How long a batch failing with a transient error (a deadlock, a statement timeout, or
    /// an error a handler marked [`Transient`](crate::Transient)) is retried before its
    /// failing event's stream is parked (default 5 minutes). Database outages are waited out
    /// however long they last, parking nothing.
    #[must_use]
    pub fn transient_budget(mut self, budget: Duration) -> Self {
        self.options.retries.transient_budget = budget;
        self
    }

    /// Limits on a batch's transaction, on PostgreSQL only (default 60 s each): how long one
    /// statement may run (`statement_timeout`), and how long the transaction may sit idle
    /// between statements (`idle_in_transaction_session_timeout`: a handler awaiting something
    /// else than its transaction). A batch's transaction holds back every reader of the feed
    /// on the server while it runs, so a hung handler is cut off (the server rolls the batch
    /// back and closes its connection) and the batch retried, instead of stalling the feed for
    /// hours.
    ///
    /// SQLite has no such settings, and ignores these: nothing cuts a hung handler off there.
    /// Its feed is not held back (positions are in commit order), but the batch's transaction
    /// holds SQLite's one write lock, so other writers to the database (appends, other
    /// runners) wait for it up to the store's busy timeout (30 s), then fail busy. Bound a
    /// handler that awaits something slow yourself (`tokio::time::timeout`).
    #[must_use]
    pub fn transaction_timeouts(mut self, statement: Duration, idle: Duration) -> Self {
        self.options.statement_timeout = statement;
        self.options.idle_timeout = idle;
        self
    }

    /// Retries the parked streams by itself every `every` while it runs (off by default: a
    /// parked stream waits for a person, `retry_parked`/`skip_parked`). For failures that
    /// pass without anyone's help after the transient budget (another system down for
    /// longer); a stream whose event still fails stays parked until the next round.
    #[must_use]
    pub fn redrive_parked(mut self, every: Duration) -> Self {
        self.options.redrive = Some(every);
        self
    }

    /// Whether a stream whose event keeps failing is parked in the dead-letter queue so that
    /// other streams flow on (the default), or the runner stops instead.
    #[must_use]
    pub fn dead_letters(mut self, enabled: bool) -> Self {
        self.options.dead_letters = enabled;
        self
    }

    /// The same runner (options, position) for another projection value of the same kind
    /// (handles taken before do not follow it).
    pub(crate) fn with_projection<Q: Projection>(self, projection: Q) -> ProjectionRunner<S, Q> {
        ProjectionRunner {
            store: self.store,
            projection,
            sql: self.sql,
            options: self.options,
            position: self.position,
            read_ahead: self.read_ahead,
            limit: self.limit,
            replaying: self.replaying,
            control: Control::new(P::NAME),
            lease_token: self.lease_token,
            undecodable: self.undecodable,
        }
    }

    /// The projection.
    pub fn projection(&self) -> &P {
        &self.projection
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// A statement of the runner's SQL, with the projection's name and version bound as `$1`
    /// and `$2`.
    pub(super) fn statement(&self, sql: &Arc<str>) -> Statement {
        super::sql::statement::<P>(sql, self.store.bookkeeping_name(P::NAME))
    }

    pub(super) fn fail(&self, error: sqlx::Error) -> Error {
        self.store.fail(error)
    }

    /// The position processed so far.
    ///
    /// # Errors
    /// A store error.
    pub async fn checkpoint(&self) -> Result<FeedPosition, Error> {
        let mut connection = self.store.acquire().await?;
        let row = self
            .fetch_optional(
                &mut connection.tx(),
                self.statement(&self.sql.read_checkpoint),
            )
            .await?;
        row.map_or(Ok(FeedPosition::START), |row| {
            Ok(FeedPosition::new(
                columns::unsigned::<_, i64, _>(&row, 0)?,
                columns::unsigned::<_, i64, _>(&row, 1)?,
            ))
        })
    }

    /// Whether a failure parks its stream rather than stopping the runner: dead-lettering is on
    /// and the failure is the event's, not the database's (an outage parks nothing).
    pub(super) fn parks(&self, cause: &super::HandlerError) -> bool {
        self.options.dead_letters && Failure::of(cause) != Failure::Outage
    }
}

/// Running statements on `tx`, a store error typed by the store.
impl<S: SqlStore, P: Projection> ProjectionRunner<S, P> {
    pub(super) async fn execute(
        &self,
        tx: &mut crate::store::Tx<'_>,
        statement: Statement,
    ) -> Result<sqlx::any::AnyQueryResult, Error> {
        statement.execute(tx).await.map_err(|e| self.fail(e))
    }

    pub(super) async fn fetch_all(
        &self,
        tx: &mut crate::store::Tx<'_>,
        statement: Statement,
    ) -> Result<Vec<sqlx::any::AnyRow>, Error> {
        statement.fetch_all(tx).await.map_err(|e| self.fail(e))
    }

    /// `statement`'s rows, read on a connection of their own, outside any transaction.
    pub(super) async fn fetch_all_alone(
        &self,
        statement: Statement,
    ) -> Result<Vec<sqlx::any::AnyRow>, Error> {
        let mut connection = self.store.acquire().await?;
        self.fetch_all(&mut connection.tx(), statement).await
    }

    pub(super) async fn fetch_optional(
        &self,
        tx: &mut crate::store::Tx<'_>,
        statement: Statement,
    ) -> Result<Option<sqlx::any::AnyRow>, Error> {
        statement.fetch_optional(tx).await.map_err(|e| self.fail(e))
    }

    pub(super) async fn fetch_one(
        &self,
        tx: &mut crate::store::Tx<'_>,
        statement: Statement,
    ) -> Result<sqlx::any::AnyRow, Error> {
        statement.fetch_one(tx).await.map_err(|e| self.fail(e))
    }
}

/// A boxed, sendable future.
pub(super) type BoxFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Work a handle asks of the running runner, told whether the runner holds the lease.
pub(super) type Request<S, P> =
    Box<dyn for<'a> FnOnce(&'a mut ProjectionRunner<S, P>, bool) -> BoxFuture<'a, ()> + Send>;

/// The runner's side: where it publishes its state and takes requests.
#[derive(Debug)]
pub(super) struct Control<S, P> {
    /// The projection's name, for its metrics.
    pub name: &'static str,
    pub state: watch::Sender<RunnerState>,
    pub requests: mpsc::UnboundedReceiver<Request<S, P>>,
    pub sender: mpsc::UnboundedSender<Request<S, P>>,
}

impl<S, P> Control<S, P> {
    pub fn new(name: &'static str) -> Self {
        let (sender, requests) = mpsc::unbounded_channel();
        Self {
            name,
            state: watch::Sender::new(RunnerState::NotStarted),
            requests,
            sender,
        }
    }

    /// Publishes `state` (when it changed), and records it as metrics.
    pub fn set(&self, state: RunnerState) {
        self.state.send_if_modified(|current| {
            let changed = *current != state;
            if changed {
                crate::metrics::runner_state(
                    "projection",
                    self.name,
                    state == RunnerState::Running,
                    matches!(state, RunnerState::Retrying { .. }),
                );
            }
            *current = state;
            changed
        });
    }
}
