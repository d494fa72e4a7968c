//! Projections: read models fed from the global feed, with an exactly-once effect, on either
//! SQL store.
//!
//! `#[projection]` on an impl block turns methods marked `#[handle]` (each taking one event type,
//! its envelope and the batch's transaction) into a [`Projection`]: the list of event types to
//! read (the store filters them) and the dispatch. A [`ProjectionRunner`] commits each batch of
//! handler writes together with the projection's checkpoint, and skips events at or below the
//! checkpoint: delivery is at least once, the effect exactly once.
//!
//! Handlers that take `&mut factum::Tx<'_>` run on PostgreSQL and on SQLite (their SQL goes
//! through sqlx's `Any` driver, so keep it portable, or branch on [`Tx::postgres`] /
//! [`Tx::sqlite`]); handlers that take `&mut PgConnection` or `&mut SqliteConnection` make a
//! projection of that store only, and running it on the other is a compile error.
//!
//! - `#[flush]` / `#[discard]`: handlers may buffer a batch's changes in memory; the flush writes
//!   them once per batch, in its transaction; discard drops them before every batch.
//! - `#[reset]`: clears the read model, for rebuilds from the start (`factum projections
//!   rebuild`, [`ProjectionRunner::rebuild`]).
//! - A stream whose event keeps failing is parked in a dead-letter queue (the runner's
//!   `parked`, `retry_parked`, `skip_parked`) while other streams flow on.
//! - Bumping the version builds the new version beside the active one and switches over when it
//!   has caught up ([`VersionState`], [`active_version`]).
//! - `#[handle(side_effects)]` handlers (taking the event and its envelope, no transaction) act
//!   outside the database: the batch records the decision with the checkpoint, the handler runs
//!   after the commit (so a slow mailer holds no transaction open and delays no reader), and is
//!   retried until it succeeds, with the event id as its idempotency key. Rebuilds skip them.
//! - `#[projection(inline)]`: also applied in the append's transaction, for read-your-writes
//!   (`store.with_inline(...)`).
//! - Handlers taking `origin: &Origin<'_>` instead of `envelope: &Envelope` see the event's ids,
//!   stream, versions, positions and recording time, not its metadata, correlation, causation
//!   or actor; handlers taking `source: &Source<'_>` see only its stream, type and feed
//!   position. The runner reads only the columns of what its handlers take
//!   ([`Projection::ENVELOPE`]), which makes catching up on PostgreSQL markedly faster; a batch
//!   read without ids or stream versions is read again whole when it fails, so errors and dead
//!   letters still name each event exactly.
//!
//! Every feature works on both stores. The runner's logic is written once (`runner`, `batch`,
//! `dead_letter`, `versions`, `inline`); each store contributes only its SQL (`postgres`,
//! `sqlite`, under the contract in `sql`).

use std::future::Future;

use crate::envelope::{EnvelopeFields, RecordedEvent};
use crate::store::{StoreKind, Tx};

#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod batch;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod dead_letter;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod follow;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod handle;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod inline;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod retry;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod runner;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;
mod status;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod versions;

#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub use batch::BatchOutcome;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub use handle::RunnerHandle;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub use inline::WithInline;
#[cfg(feature = "postgres")]
pub use runner::PgProjectionRunner;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub use runner::ProjectionRunner;
#[cfg(feature = "sqlite")]
pub use runner::SqliteProjectionRunner;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) use status::Failing;
pub use status::{
    ParkedStream, ProjectionStatus, RetryOutcome, RunnerError, RunnerState, VersionState,
};
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub use versions::active_version;

/// The runner's SQL for a store's dialect.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
fn statements(dialect: &crate::store::sql::Dialect) -> sql::ProjectionSql {
    match dialect {
        #[cfg(feature = "postgres")]
        crate::store::sql::Dialect::Postgres(schema) => postgres::statements(schema),
        #[cfg(feature = "sqlite")]
        crate::store::sql::Dialect::Sqlite => sqlite::statements(),
    }
}

/// A read model fed from the global feed. Implemented by `#[projection]`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a projection",
    label = "not a projection",
    note = "annotate an `impl` block with `#[factum::projection(name = \"...\")]`"
)]
pub trait Projection: Send + 'static {
    /// The projection's stable name (its checkpoint is kept under it).
    const NAME: &'static str;
    /// The projection's version: bump it to rebuild from the start.
    const VERSION: u32;
    /// The event types it handles; the store sends only these.
    const EVENT_TYPES: &'static [&'static str];

    /// What it is, in the spans its handlers run in ([`crate::trace`]): `projection`, or
    /// `saga` for a saga's event side.
    #[doc(hidden)]
    const KIND: &'static str = "projection";

    /// The event types whose handlers act outside the database (`#[handle(side_effects)]`):
    /// skipped while a new version of the projection replays the history, and recorded by event
    /// id when run, so no event's side effect is triggered twice by this projection, whatever
    /// its version.
    const SIDE_EFFECTS: &'static [&'static str] = &[];

    /// Whether it may be applied in append transactions (`#[projection(inline)]`): its runner
    /// then skips what inline applications did.
    const INLINE: bool = false;

    /// The store its handlers are written for (they take its connection), or `None` when they
    /// take [`Tx`] and run on either.
    const STORE: Option<StoreKind> = None;

    /// The envelope fields its handlers read: [`EnvelopeFields::Source`] when every handler of
    /// a `#[projection]` takes `source: &Source<'_>`, [`EnvelopeFields::Origin`] when every
    /// handler takes that or `origin: &Origin<'_>`, rather than `envelope: &Envelope`; then
    /// the runner reads only those columns (and the ids and stream versions when an inline
    /// projection or side effects need them), and the events handed to
    /// [`handle`](Self::handle) and [`perform`](Self::perform) hold placeholders in the others
    /// (see [`EnvelopeFields`]). Set it by hand only for handlers that never read them.
    const ENVELOPE: EnvelopeFields = EnvelopeFields::All;

    /// Handles one stored event (decoding and upcasting it to the handler's type), in the
    /// batch's transaction.
    ///
    /// # Errors
    /// [`HandlerError`]: the event does not decode, or the handler failed.
    fn handle<'a>(
        &'a mut self,
        event: &'a RecordedEvent,
        tx: &'a mut Tx<'_>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send + 'a;

    /// Performs the side effect of one stored event of a `#[handle(side_effects)]` type
    /// (decoding it for the handler), after the batch that decided it committed, outside any
    /// transaction. The runner calls it until it succeeds; the event id is the idempotency key
    /// to hand to the other system. By default nothing.
    ///
    /// # Errors
    /// [`HandlerError`]: the event does not decode, or the effect failed (it is retried).
    fn perform<'a>(
        &'a mut self,
        event: &'a RecordedEvent,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send + 'a {
        let _ = event;
        std::future::ready(Ok(()))
    }

    /// Writes what the handlers buffered for the batch, in the batch's transaction, before the
    /// checkpoint moves. Generated from a `#[flush]` method; by default nothing.
    ///
    /// # Errors
    /// [`HandlerError::Flush`]: the batch is rolled back (and [`Projection::discard`] called).
    fn flush<'a>(
        &'a mut self,
        tx: &'a mut Tx<'_>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send + 'a {
        let _ = tx;
        std::future::ready(Ok(()))
    }

    /// Drops whatever the handlers buffered: called before every batch, so a batch that was
    /// rolled back leaves nothing behind. Generated from a `#[discard]` method; by default
    /// nothing.
    fn discard(&mut self) {}

    /// Called after a batch's transaction committed (by default nothing): to tell others in
    /// the process that the projection's writes are visible.
    fn committed(&mut self) {}
}

/// A projection that runs on the store `S`: generated by `#[projection]` for every SQL store
/// when the handlers take [`Tx`], for one store when they take its connection.
#[diagnostic::on_unimplemented(
    message = "projection `{Self}` does not run on `{S}`",
    label = "its handlers take another store's connection",
    note = "handlers that take `&mut factum::Tx<'_>` run on either store"
)]
pub trait RunsOn<S>: Projection {}

/// A projection that can clear its read model, for rebuilds from the start: a `#[reset]`
/// method (`async fn reset(&mut self, tx: &mut Tx<'_>) -> Result<(), E>`, deleting its rows).
#[diagnostic::on_unimplemented(
    message = "projection `{Self}` has no `#[reset]` method",
    label = "a rebuild cannot clear its read model",
    note = "add `#[reset] async fn reset(&mut self, tx: &mut factum::Tx<'_>) -> Result<(), E>` that deletes its rows"
)]
pub trait Reset: Projection {
    /// Clears the read model of this version, in the rebuild's transaction.
    ///
    /// # Errors
    /// [`HandlerError::Flush`] with the method's error.
    fn reset<'a>(
        &'a mut self,
        tx: &'a mut Tx<'_>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send + 'a;
}

/// A projection that may be applied in the append's transaction, for read-your-writes:
/// `#[projection(inline)]`. Register it with `store.with_inline(...)`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an inline projection",
    label = "not declared inline",
    note = "add `inline` to its attribute: `#[factum::projection(name = \"...\", inline)]`"
)]
pub trait InlineProjection: Projection {}

/// Why a projection could not handle an event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandlerError {
    /// The stored event does not decode into the handler's type: retrying cannot help.
    #[error("event {stream_id}@{stream_version} does not decode: {cause}")]
    Decode {
        /// The stream.
        stream_id: String,
        /// The version.
        stream_version: u64,
        /// Why.
        #[source]
        cause: crate::error::DecodeError,
    },

    /// The `#[flush]` method failed (the batch's writes as a whole: no single event is named).
    #[error("the projection's flush failed: {cause}")]
    Flush {
        /// The flush's error.
        #[source]
        cause: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The handler returned an error (a database error, a broken invariant of the read model).
    #[error("the handler failed on {stream_id}@{stream_version}: {cause}")]
    Handler {
        /// The stream.
        stream_id: String,
        /// The version.
        stream_version: u64,
        /// The handler's error.
        #[source]
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl HandlerError {
    /// A decoding failure of `event`. Used by generated code.
    #[doc(hidden)]
    #[must_use]
    pub fn decode(event: &RecordedEvent, cause: crate::error::DecodeError) -> Self {
        Self::Decode {
            stream_id: event.stream_id.clone(),
            stream_version: event.stream_version,
            cause,
        }
    }

    /// A handler failure on `event`. Used by generated code.
    #[doc(hidden)]
    #[must_use]
    pub fn handler(
        event: &RecordedEvent,
        cause: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Handler {
            stream_id: event.stream_id.clone(),
            stream_version: event.stream_version,
            cause: cause.into(),
        }
    }

    /// A handler written for one store that runs on another (possible only through registration
    /// that erases the store, as the command-line tool's). Used by generated code.
    #[doc(hidden)]
    #[must_use]
    pub fn wrong_store(expected: StoreKind, tx: &Tx<'_>) -> Self {
        Self::Flush {
            cause: format!(
                "the projection is written for {expected} (its handlers take {expected}'s connection) but runs on {}; run it on a {expected} store",
                tx.kind()
            )
            .into(),
        }
    }

    /// A failure of the `#[flush]` method. Used by generated code.
    #[doc(hidden)]
    #[must_use]
    pub fn flush(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Flush {
            cause: cause.into(),
        }
    }

    /// Whether the failure is transient: the handler's error is a database outage, a deadlock,
    /// a statement timeout... or marked [`Transient`](crate::Transient) (see
    /// [`Error::is_transient`](crate::Error::is_transient)). A decoding failure never is.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Decode { .. } => false,
            Self::Handler { cause, .. } | Self::Flush { cause } => {
                crate::failure::classify(cause.as_ref()).retryable()
            }
        }
    }
}
