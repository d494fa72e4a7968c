//! [`ProjectionTarget`]: a `#[projection]` of another service fed from a broker, on either SQL
//! store, with the once-only bookkeeping in the projection's transaction.

use std::sync::Arc;

use super::{Target, TargetError};
use crate::envelope::RecordedEvent;
use crate::projection::{HandlerError, Projection, RunsOn};
use crate::store::backend::{columns, to_i64};
use crate::store::sql::Dialect;
use crate::store::{SqlStore, Tx};

type Statement = sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments>;

/// The statements of the consumer tables (`consumer_streams`, `consumer_positions`).
#[derive(Debug)]
struct ConsumerSql {
    /// `$1` consumer, `$2` stream, `$3` version: a row when the version is new for the stream.
    claim: Arc<str>,
    /// `$1` consumer: the position.
    position: Arc<str>,
    /// `$1` consumer, `$2` position (or NULL), `$3` events applied.
    save: Arc<str>,
}

impl ConsumerSql {
    fn new(dialect: &Dialect) -> Self {
        let prefix = match dialect {
            #[cfg(feature = "postgres")]
            Dialect::Postgres(schema) => format!("{}.", schema.quoted()),
            #[cfg(feature = "sqlite")]
            Dialect::Sqlite => String::new(),
        };
        let now = match dialect {
            #[cfg(feature = "postgres")]
            Dialect::Postgres(_) => "now()",
            #[cfg(feature = "sqlite")]
            Dialect::Sqlite => "CURRENT_TIMESTAMP",
        };
        // The keys' leading columns: PostgreSQL keeps each tenant's rows apart by a column its
        // row-level security fills and checks; SQLite, by the consumer's bookkeeping name.
        let tenant = match dialect {
            #[cfg(feature = "postgres")]
            Dialect::Postgres(_) => "tenant, ",
            #[cfg(feature = "sqlite")]
            Dialect::Sqlite => "",
        };
        Self {
            claim: format!(
                "INSERT INTO {prefix}consumer_streams AS s (consumer, stream_id, stream_version)
                 VALUES ($1, $2, $3)
                 ON CONFLICT ({tenant}consumer, stream_id) DO UPDATE
                     SET stream_version = excluded.stream_version
                     WHERE s.stream_version < excluded.stream_version
                 RETURNING 1"
            )
            .into(),
            position: format!(
                "SELECT position FROM {prefix}consumer_positions WHERE consumer = $1"
            )
            .into(),
            save: format!(
                "INSERT INTO {prefix}consumer_positions AS p (consumer, position, applied)
                 VALUES ($1, $2, $3)
                 ON CONFLICT ({tenant}consumer) DO UPDATE
                     SET position = CASE
                             WHEN excluded.position IS NULL THEN p.position
                             WHEN p.position IS NULL OR p.position < excluded.position
                                 THEN excluded.position
                             ELSE p.position END,
                         applied = p.applied + excluded.applied,
                         updated_at = {now}"
            )
            .into(),
        }
    }
}

fn query(sql: &Arc<str>) -> Statement {
    sqlx::query(sqlx::AssertSqlSafe(Arc::clone(sql)))
}

/// Feeds a service's `#[projection]` from a broker: each batch in one transaction of the
/// service's own store (PostgreSQL or SQLite, migrated), with, in it, the newest stream version
/// applied of each stream (`consumer_streams`) and the source position (`consumer_positions`),
/// under the consumer's name. Events the projection does not handle are passed over (the
/// position still moves past them).
#[derive(Debug)]
pub struct ProjectionTarget<S, P> {
    store: S,
    projection: P,
    name: String,
    sql: ConsumerSql,
}

impl<S: SqlStore, P: Projection + RunsOn<S>> ProjectionTarget<S, P> {
    /// `projection`, kept in `store` under the consumer name `name`.
    pub fn new(store: S, name: impl Into<String>, projection: P) -> Self {
        let sql = ConsumerSql::new(&store.dialect());
        Self {
            store,
            projection,
            name: name.into(),
            sql,
        }
    }

    /// The projection.
    pub fn projection(&self) -> &P {
        &self.projection
    }

    fn failed(&self, error: sqlx::Error) -> TargetError {
        store_error(self.store.fail(error))
    }

    /// Applies the batch in `tx`: how many events the projection handled.
    async fn apply_in(
        &mut self,
        tx: &mut Tx<'_>,
        events: &[RecordedEvent],
        position: Option<u64>,
    ) -> Result<u64, TargetError> {
        self.projection.discard();
        let mut applied = 0_u64;
        for event in events {
            if !P::EVENT_TYPES.contains(&event.event_type.as_str()) {
                continue;
            }
            let new = query(&self.sql.claim)
                .bind(&*self.store.bookkeeping_name(&self.name))
                .bind(event.stream_id.as_str())
                .bind(to_i64(event.stream_version))
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| self.failed(e))?
                .is_some();
            if !new {
                continue;
            }
            // In the trace of the command that appended it, when the message carried one.
            let handled = match crate::trace::handling_span(P::KIND, P::NAME, event) {
                Some(span) => {
                    tracing::Instrument::instrument(self.projection.handle(event, tx), span).await
                }
                None => self.projection.handle(event, tx).await,
            };
            handled.map_err(|error| handler_error(event, error))?;
            applied += 1;
        }
        self.projection
            .flush(tx)
            .await
            .map_err(|error| match error {
                HandlerError::Flush { cause } => TargetError::Transient(cause),
                other => TargetError::Transient(Box::new(other)),
            })?;
        query(&self.sql.save)
            .bind(&*self.store.bookkeeping_name(&self.name))
            .bind(position.map(to_i64))
            .bind(to_i64(applied))
            .execute(&mut *tx)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(applied)
    }
}

/// A store error: retried when it may pass, else the target cannot work (not migrated, a
/// newer schema, another cluster).
fn store_error(error: crate::Error) -> TargetError {
    if error.is_transient() {
        TargetError::Transient(Box::new(error))
    } else {
        TargetError::Invalid(Box::new(error))
    }
}

fn handler_error(event: &RecordedEvent, error: HandlerError) -> TargetError {
    match error {
        HandlerError::Handler { cause, .. } => TargetError::of(event, cause),
        other => TargetError::of(event, other),
    }
}

impl<S: SqlStore, P: Projection + RunsOn<S>> Target for ProjectionTarget<S, P> {
    async fn position(&mut self) -> Result<Option<u64>, TargetError> {
        let mut connection = self.store.acquire().await.map_err(store_error)?;
        let row = query(&self.sql.position)
            .bind(&*self.store.bookkeeping_name(&self.name))
            .fetch_optional(&mut connection.tx())
            .await
            .map_err(|e| self.failed(e))?;
        match row {
            None => Ok(None),
            Some(row) => columns::unsigned_opt::<_, i64, u64>(&row, 0).map_err(store_error),
        }
    }

    async fn apply(
        &mut self,
        events: &[RecordedEvent],
        position: Option<u64>,
    ) -> Result<u64, TargetError> {
        let mut transaction = self.store.begin().await.map_err(store_error)?;
        let outcome = self.apply_in(&mut transaction.tx(), events, position).await;
        match outcome {
            Ok(applied) => {
                transaction.commit().await.map_err(store_error)?;
                self.projection.committed();
                Ok(applied)
            }
            Err(error) => {
                self.projection.discard();
                if let Err(rollback) = transaction.rollback().await {
                    tracing::warn!(%rollback, "could not roll back a consumer's batch");
                }
                Err(error)
            }
        }
    }
}
