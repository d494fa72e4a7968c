//! Projections: read models fed from the global feed, with an exactly-once effect.
//!
//! `#[projection]` on an impl block turns methods marked `#[handle]` (each taking one event type,
//! its envelope and the batch's transaction) into a [`Projection`]: the list of event types to
//! read (the store filters them) and the dispatch. The runner ([`ProjectionRunner`], PostgreSQL)
//! commits each batch of handler writes together with the projection's checkpoint, and skips
//! events at or below the checkpoint: delivery is at least once, the effect exactly once.
//!
//! - `#[flush]` / `#[discard]`: handlers may buffer a batch's changes in memory; the flush writes
//!   them once per batch, in its transaction; discard drops them before every batch.
//! - A stream whose event keeps failing is parked in a dead-letter queue (the runner's
//!   `parked`, `retry_parked`, `skip_parked`) while other streams flow on.
//! - Bumping the version builds the new version beside the active one and switches over when it
//!   has caught up ([`VersionState`], [`active_version`]).
//! - `#[handle(side_effects)]` handlers are skipped by rebuilds and run at most once per event.
//! - `#[projection(inline)]`: also applied in the append's transaction, for read-your-writes
//!   (`PostgresStore::with_inline`).

use std::future::Future;

use crate::envelope::RecordedEvent;

#[cfg(feature = "postgres")]
mod dead_letter;
#[cfg(feature = "postgres")]
mod inline;
#[cfg(feature = "postgres")]
mod runner;
#[cfg(feature = "sqlite")]
mod sqlite;
mod status;
#[cfg(feature = "postgres")]
mod versions;

#[cfg(feature = "postgres")]
pub use runner::{BatchOutcome, ProjectionRunner};
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteProjectionRunner;
pub use status::{ParkedStream, ProjectionStatus, RetryOutcome, RunnerError, VersionState};
#[cfg(feature = "postgres")]
pub use versions::active_version;

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

    /// The event types whose handlers act outside the database (`#[handle(side_effects)]`):
    /// skipped while a new version of the projection replays the history, and recorded by event
    /// id when run, so no event's side effect is triggered twice by this projection, whatever
    /// its version.
    const SIDE_EFFECTS: &'static [&'static str] = &[];

    /// Whether it may be applied in append transactions (`#[projection(inline)]`): its runner
    /// then skips what inline applications did.
    const INLINE: bool = false;

    /// The database connection its handlers write with, inside the batch's transaction.
    type Connection: Send;

    /// Handles one stored event (decoding and upcasting it to the handler's type).
    ///
    /// # Errors
    /// [`HandlerError`]: the event does not decode, or the handler failed.
    fn handle<'a>(
        &'a mut self,
        event: &'a RecordedEvent,
        connection: &'a mut Self::Connection,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send + 'a;

    /// Writes what the handlers buffered for the batch, in the batch's transaction, before the
    /// checkpoint moves. Generated from a `#[flush]` method; by default nothing.
    ///
    /// # Errors
    /// [`HandlerError::Flush`]: the batch is rolled back (and [`Projection::discard`] called).
    fn flush<'a>(
        &'a mut self,
        connection: &'a mut Self::Connection,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send + 'a {
        let _ = connection;
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

/// A projection that may be applied in the append's transaction, for read-your-writes:
/// `#[projection(inline)]`. Register it with `PostgresStore::with_inline`.
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

    /// A failure of the `#[flush]` method. Used by generated code.
    #[doc(hidden)]
    #[must_use]
    pub fn flush(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Flush {
            cause: cause.into(),
        }
    }

    /// Whether a retry may succeed (a handler error may be transient; a decoding error is not).
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Handler { .. } | Self::Flush { .. })
    }
}
