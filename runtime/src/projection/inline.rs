//! Inline projections: applied in the append's transaction, for read-your-writes, on either
//! store.
//!
//! A projection marked `#[projection(inline)]` and registered on a store with `with_inline` is
//! applied to every append made through that store, in the append's transaction: when the
//! append returns, its read model shows it; when the projection fails, the append is rolled
//! back and returns [`Error::InlineProjection`].
//!
//! Its runner still runs: it applies what no inline application did (events appended through
//! other stores or processes, the history before the projection existed, a new version's
//! rebuild). The two never apply an event twice and keep each stream in order:
//!
//! - an inline application records, per stream, the version up to which the stream is applied
//!   (`projection_inline_streams`), and the runner skips those events;
//! - before the appended events, it applies the stream's earlier events that neither has
//!   applied yet (after the runner's checkpoint, above the stream's inline mark);
//! - it holds the runner's checkpoint row with a share lock (PostgreSQL; SQLite's append holds
//!   the write lock), so it and a batch of the runner take turns (appends do not wait for each
//!   other);
//! - a stream parked in the dead-letter queue is left to the runner, which queues the new events
//!   behind the parked one.

use std::marker::PhantomData;
use std::sync::Arc;

use super::{InlineProjection, RunsOn};
use crate::envelope::RecordedEvent;
use crate::error::{Error, Result};
use crate::position::FeedPosition;
use crate::store::backend::{columns, to_i64};
use crate::store::sql::{AppendHook, BoxFuture, Unapplied};
use crate::store::{SqlStore, Tx};

/// Registers the inline projection `P` on `store`.
fn install<S, P>(store: &S, new_projection: impl Fn() -> P + Send + Sync + 'static) -> S
where
    S: SqlStore,
    P: InlineProjection + RunsOn<S>,
{
    store.with_hook(Arc::new(Inline {
        new_projection,
        sql: super::statements(&store.dialect()),
        projection: PhantomData,
    }))
}

/// `with_inline` for code generic over the store (each store also has it as its own method).
pub trait WithInline: SqlStore {
    /// This store, applying the projection `P` (made by `new_projection` for each append) in
    /// every append's transaction; see `PostgresStore::with_inline`.
    #[must_use]
    fn with_inline<P>(&self, new_projection: impl Fn() -> P + Send + Sync + 'static) -> Self
    where
        P: InlineProjection + RunsOn<Self>,
    {
        install(self, new_projection)
    }
}

impl<S: SqlStore> WithInline for S {}

#[cfg(feature = "postgres")]
impl crate::store::PostgresStore {
    /// This store, applying the projection `P` (made by `new_projection` for each append) in
    /// every append's transaction. `P`'s runner keeps running for what is appended elsewhere.
    ///
    /// ```no_run
    /// # async fn run<P: factum::projection::InlineProjection + factum::projection::RunsOn<factum::store::PostgresStore> + Default>(
    /// #     store: factum::store::PostgresStore,
    /// # ) {
    /// let store = store.with_inline(P::default);
    /// // Appends through `store` (and repositories on it) now update P's tables as they commit.
    /// # }
    /// ```
    #[must_use]
    pub fn with_inline<P>(&self, new_projection: impl Fn() -> P + Send + Sync + 'static) -> Self
    where
        P: InlineProjection + RunsOn<Self>,
    {
        install(self, new_projection)
    }
}

#[cfg(feature = "sqlite")]
impl crate::store::SqliteStore {
    /// This store, applying the projection `P` (made by `new_projection` for each append) in
    /// every append's transaction; see [`PostgresStore::with_inline`](crate::store::PostgresStore).
    #[must_use]
    pub fn with_inline<P>(&self, new_projection: impl Fn() -> P + Send + Sync + 'static) -> Self
    where
        P: InlineProjection + RunsOn<Self>,
    {
        install(self, new_projection)
    }
}

struct Inline<P, F> {
    new_projection: F,
    sql: super::sql::ProjectionSql,
    projection: PhantomData<fn() -> P>,
}

/// Where an inline application starts from.
struct Standing {
    checkpoint: FeedPosition,
    /// The stream's inline mark (0: none).
    applied: u64,
    parked: bool,
}

impl<P, F> Inline<P, F>
where
    P: InlineProjection,
    F: Fn() -> P + Send + Sync + 'static,
{
    fn failed(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
        Error::InlineProjection {
            projection: P::NAME,
            cause: cause.into(),
        }
    }

    /// Whether `stream_id` is parked.
    async fn parked<S: SqlStore>(
        &self,
        store: &S,
        tx: &mut Tx<'_>,
        stream_id: &str,
    ) -> Result<bool> {
        let parked: Option<String> =
            super::sql::statement::<P>(&self.sql.parked_among, store.bookkeeping_name(P::NAME))
                .bind(super::batch::json(&[stream_id])?)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| store.fail(e))?
                .map(|row| columns::get(&row, 0))
                .transpose()?
                .flatten();
        let parked = super::sql::parked_streams::<P>(parked)?;
        Ok(parked.iter().any(|parked| parked == stream_id))
    }

    async fn standing<S: SqlStore>(
        &self,
        store: &S,
        tx: &mut Tx<'_>,
        stream_id: &str,
    ) -> Result<Standing> {
        for _ in 0..2 {
            let row = super::sql::statement::<P>(
                &self.sql.inline_standing,
                store.bookkeeping_name(P::NAME),
            )
            .bind(stream_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| store.fail(e))?;
            if let Some(row) = row {
                // Which streams are parked is asked after the lock, in a statement of its own:
                // one that waited for a runner's batch sees what that batch parked.
                let parked = columns::get::<_, i64>(&row, 3)? != 0
                    && self.parked(store, tx, stream_id).await?;
                return Ok(Standing {
                    checkpoint: FeedPosition::new(
                        columns::unsigned::<_, i64, _>(&row, 0)?,
                        columns::unsigned::<_, i64, _>(&row, 1)?,
                    ),
                    applied: columns::unsigned_opt::<_, i64, _>(&row, 2)?.unwrap_or_default(),
                    parked,
                });
            }
            super::sql::statement::<P>(
                &self.sql.ensure_checkpoint,
                store.bookkeeping_name(P::NAME),
            )
            .execute(&mut *tx)
            .await
            .map_err(|e| store.fail(e))?;
        }
        Err(Self::failed(format!(
            "the checkpoint of projection `{}` cannot be created",
            P::NAME
        )))
    }

    async fn apply<S: SqlStore>(
        &self,
        store: &S,
        tx: &mut Tx<'_>,
        events: &[RecordedEvent],
    ) -> Result<()> {
        let handled = |e: &&RecordedEvent| P::EVENT_TYPES.contains(&e.event_type.as_str());
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return Ok(());
        };
        if !events.iter().any(|e| handled(&e)) {
            return Ok(());
        }
        let stream_id = first.stream_id.as_str();
        let standing = self.standing(store, tx, stream_id).await?;
        if standing.parked {
            tracing::debug!(
                projection = P::NAME,
                stream = stream_id,
                "stream parked: its new events wait in the dead-letter queue, not applied inline"
            );
            return Ok(());
        }
        let earlier = if standing.applied + 1 < first.stream_version {
            let unapplied = Unapplied {
                stream_id,
                after: standing.applied,
                before: first.stream_version,
                event_types: P::EVENT_TYPES,
                checkpoint: standing.checkpoint,
            };
            store.unapplied(tx, unapplied).await?
        } else {
            Vec::new()
        };
        let mut projection = (self.new_projection)();
        projection.discard();
        for event in earlier.iter().chain(events.iter().filter(handled)) {
            projection.handle(event, tx).await.map_err(Self::failed)?;
        }
        projection.flush(tx).await.map_err(Self::failed)?;
        super::sql::statement::<P>(&self.sql.inline_mark, store.bookkeeping_name(P::NAME))
            .bind(stream_id)
            .bind(to_i64(last.stream_version))
            .execute(&mut *tx)
            .await
            .map_err(|e| store.fail(e))?;
        Ok(())
    }
}

impl<S, P, F> AppendHook<S> for Inline<P, F>
where
    S: SqlStore,
    P: InlineProjection,
    F: Fn() -> P + Send + Sync + 'static,
{
    fn appended<'a>(
        &'a self,
        store: &'a S,
        tx: &'a mut Tx<'_>,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.apply(store, tx, events))
    }
}
