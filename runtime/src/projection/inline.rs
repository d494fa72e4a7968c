//! Inline projections: applied in the append's transaction, for read-your-writes.
//!
//! A projection marked `#[projection(inline)]` and registered on a store with
//! [`PostgresStore::with_inline`] is applied to every append made through that store, in the
//! append's transaction: when the append returns, its read model shows it; when the projection
//! fails, the append is rolled back and returns [`Error::InlineProjection`].
//!
//! Its runner still runs: it applies what no inline application did (events appended through
//! other stores or processes, the history before the projection existed, a new version's
//! rebuild). The two never apply an event twice and keep each stream in order:
//!
//! - an inline application records, per stream, the version up to which the stream is applied
//!   (`projection_inline_streams`), and the runner skips those events;
//! - before the appended events, it applies the stream's earlier events that neither has
//!   applied yet (after the runner's checkpoint, above the stream's inline mark);
//! - it holds the runner's checkpoint row with a share lock, so it and a batch of the runner
//!   take turns (appends do not wait for each other);
//! - a stream parked in the dead-letter queue is left to the runner, which queues the new events
//!   behind the parked one.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;

use sqlx::{AssertSqlSafe, PgConnection, Row as _};

use super::runner::{to_i64, to_u64, version};
use super::{InlineProjection, Projection};
use crate::envelope::RecordedEvent;
use crate::error::{Error, Result};
use crate::store::{AppendHook, ENVELOPE_COLUMNS, FeedPosition, PostgresStore};

impl PostgresStore {
    /// This store, applying the projection `P` (made by `new_projection` for each append) in
    /// every append's transaction. `P`'s runner keeps running for what is appended elsewhere.
    ///
    /// ```no_run
    /// # async fn run<P: factum::projection::InlineProjection<Connection = sqlx::PgConnection> + Default>(
    /// #     store: factum::store::PostgresStore,
    /// # ) {
    /// let store = store.with_inline(P::default);
    /// // Appends through `store` (and repositories on it) now update P's tables as they commit.
    /// # }
    /// ```
    #[must_use]
    pub fn with_inline<P: InlineProjection<Connection = PgConnection>>(
        &self,
        new_projection: impl Fn() -> P + Send + Sync + 'static,
    ) -> Self {
        self.with_hook(Arc::new(Inline {
            new_projection,
            sql: Sql::new(self.schema()),
            projection: PhantomData,
        }))
    }
}

struct Inline<P, F> {
    new_projection: F,
    sql: Sql,
    projection: PhantomData<fn() -> P>,
}

struct Sql {
    ensure_checkpoint: String,
    /// The checkpoint (share-locked), the stream's inline mark and whether it is parked.
    lock: String,
    /// The stream's events in a version range, of the projection's types, after a position.
    unapplied: String,
    mark: String,
}

impl Sql {
    fn new(schema: &str) -> Self {
        let s = format!("\"{schema}\"");
        Self {
            ensure_checkpoint: format!(
                "INSERT INTO {s}.projection_checkpoints (projection, version, tx, position)
                 VALUES ($1, $2, 0, 0) ON CONFLICT DO NOTHING"
            ),
            lock: format!(
                "SELECT c.tx, c.position,
                        (SELECT i.applied_version FROM {s}.projection_inline_streams i
                         WHERE i.projection = $1 AND i.version = $2 AND i.stream_id = $3),
                        EXISTS (SELECT 1 FROM {s}.projection_dead_letters d
                                WHERE d.projection = $1 AND d.version = $2
                                  AND d.stream_id = $3 AND d.status = 'parked')
                 FROM {s}.projection_checkpoints c
                 WHERE c.projection = $1 AND c.version = $2 FOR SHARE OF c"
            ),
            unapplied: format!(
                "SELECT {ENVELOPE_COLUMNS} FROM {s}.events e
                 WHERE e.stream_id = $1 AND e.stream_version > $2 AND e.stream_version < $3
                   AND e.event_type = ANY ($4) AND (e.tx, e.position) > ($5::text::xid8, $6)
                 ORDER BY e.stream_version"
            ),
            mark: format!(
                "INSERT INTO {s}.projection_inline_streams AS i
                     (projection, version, stream_id, applied_version)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (projection, version, stream_id) DO UPDATE
                     SET applied_version = excluded.applied_version, updated_at = now()
                     WHERE i.applied_version < excluded.applied_version"
            ),
        }
    }
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
    P: InlineProjection<Connection = PgConnection>,
    F: Fn() -> P + Send + Sync + 'static,
{
    fn failed(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
        Error::InlineProjection {
            projection: P::NAME,
            cause: cause.into(),
        }
    }

    async fn standing(
        &self,
        store: &PostgresStore,
        transaction: &mut PgConnection,
        stream_id: &str,
    ) -> Result<Standing> {
        for _ in 0..2 {
            let row = sqlx::query(AssertSqlSafe(self.sql.lock.clone()))
                .bind(P::NAME)
                .bind(version(P::VERSION))
                .bind(stream_id)
                .fetch_optional(&mut *transaction)
                .await
                .map_err(|e| store.fail(e))?;
            if let Some(row) = row {
                let get = |e| store.fail(e);
                return Ok(Standing {
                    checkpoint: FeedPosition::new(
                        to_u64(row.try_get(0).map_err(get)?),
                        to_u64(row.try_get(1).map_err(get)?),
                    ),
                    applied: row
                        .try_get::<Option<i64>, _>(2)
                        .map_err(get)?
                        .map_or(0, to_u64),
                    parked: row.try_get(3).map_err(get)?,
                });
            }
            sqlx::query(AssertSqlSafe(self.sql.ensure_checkpoint.clone()))
                .bind(P::NAME)
                .bind(version(P::VERSION))
                .execute(&mut *transaction)
                .await
                .map_err(|e| store.fail(e))?;
        }
        Err(Self::failed(format!(
            "the checkpoint of projection `{}` cannot be created",
            P::NAME
        )))
    }

    async fn apply(
        &self,
        store: &PostgresStore,
        transaction: &mut PgConnection,
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
        let standing = self.standing(store, transaction, stream_id).await?;
        if standing.parked {
            tracing::debug!(
                projection = P::NAME,
                stream = stream_id,
                "stream parked: its new events wait in the dead-letter queue, not applied inline"
            );
            return Ok(());
        }
        let earlier = if standing.applied + 1 < first.stream_version {
            let rows = sqlx::query(AssertSqlSafe(self.sql.unapplied.clone()))
                .bind(stream_id)
                .bind(to_i64(standing.applied))
                .bind(to_i64(first.stream_version))
                .bind(P::EVENT_TYPES)
                .bind(to_i64(standing.checkpoint.tx))
                .bind(to_i64(standing.checkpoint.position))
                .fetch_all(&mut *transaction)
                .await
                .map_err(|e| store.fail(e))?;
            store.read_rows(&rows, 0)?
        } else {
            Vec::new()
        };
        let mut projection = (self.new_projection)();
        projection.discard();
        for event in earlier.iter().chain(events.iter().filter(handled)) {
            projection
                .handle(event, transaction)
                .await
                .map_err(Self::failed)?;
        }
        projection.flush(transaction).await.map_err(Self::failed)?;
        sqlx::query(AssertSqlSafe(self.sql.mark.clone()))
            .bind(P::NAME)
            .bind(version(P::VERSION))
            .bind(stream_id)
            .bind(to_i64(last.stream_version))
            .execute(&mut *transaction)
            .await
            .map_err(|e| store.fail(e))?;
        Ok(())
    }
}

impl<P, F> AppendHook for Inline<P, F>
where
    P: InlineProjection<Connection = PgConnection>,
    F: Fn() -> P + Send + Sync + 'static,
{
    fn appended<'a>(
        &'a self,
        store: &'a PostgresStore,
        transaction: &'a mut PgConnection,
        events: &'a [RecordedEvent],
    ) -> Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>> {
        Box::pin(self.apply(store, transaction, events))
    }
}

/// The statement of [`inline_marks`], built once per runner.
pub(super) fn inline_marks_sql(schema: &str) -> String {
    format!(
        "SELECT stream_id, applied_version FROM \"{schema}\".projection_inline_streams
         WHERE projection = $1 AND version = $2 AND stream_id = ANY ($3)"
    )
}

/// The inline marks of `streams` (in the caller's transaction), for the runner to skip what
/// inline applications did; `sql` is [`inline_marks_sql`].
pub(super) async fn inline_marks<P: Projection>(
    store: &PostgresStore,
    sql: &str,
    transaction: &mut PgConnection,
    streams: &[&str],
) -> Result<std::collections::HashMap<String, u64>> {
    let rows = sqlx::query(AssertSqlSafe(sql.to_owned()))
        .bind(P::NAME)
        .bind(version(P::VERSION))
        .bind(streams)
        .fetch_all(&mut *transaction)
        .await
        .map_err(|e| store.fail(e))?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get::<String, _>(0)?,
                to_u64(row.try_get::<i64, _>(1)?),
            ))
        })
        .collect::<std::result::Result<_, sqlx::Error>>()
        .map_err(|e| store.fail(e))
}
