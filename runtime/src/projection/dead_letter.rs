//! The sequence dead-letter queue of a projection (as in Axon): when a handler keeps failing on
//! an event, the runner parks that event's stream. The event, and every later event of the
//! stream the projection handles, wait here in order while other streams flow on. An operator
//! lists parked streams, retries one (its events are handled in order, each removed once
//! applied, stopping again at the first failure) or skips its first event (kept, marked
//! skipped, for the audit trail).

use sqlx::{AssertSqlSafe, PgConnection, Row as _};

use super::runner::{to_i64, to_u64, version};
use super::status::{ParkedStream, RetryOutcome};
use super::{Projection, ProjectionRunner};
use crate::envelope::RecordedEvent;
use crate::error::Error;
use crate::store::EventStore as _;

impl<P: Projection<Connection = PgConnection>> ProjectionRunner<P> {
    /// The streams parked in this projection's dead-letter queue, oldest first.
    ///
    /// # Errors
    /// A store error.
    pub async fn parked(&self) -> Result<Vec<ParkedStream>, Error> {
        let rows = sqlx::query(AssertSqlSafe(self.sql.list_parked.clone()))
            .bind(P::NAME)
            .bind(version(P::VERSION))
            .fetch_all(self.store().pool())
            .await
            .map_err(|e| self.fail(e))?;
        rows.iter()
            .map(|row| {
                Ok(ParkedStream {
                    stream_id: row.try_get(0)?,
                    first_version: to_u64(row.try_get(1)?),
                    events: to_u64(row.try_get(2)?),
                    error: row.try_get(3)?,
                    attempts: u32::try_from(row.try_get::<i32, _>(4)?).unwrap_or(0),
                    parked_at: row.try_get(5)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| self.fail(e))
    }

    /// Retries a parked stream: handles its parked events in order, each in its own
    /// transaction (with the `#[flush]`) that also removes it from the queue, until the queue
    /// holds none of the stream (it flows again) or one fails again (it and the later ones stay
    /// parked, with the new error).
    ///
    /// # Errors
    /// A store error.
    pub async fn retry_parked(&mut self, stream_id: &str) -> Result<RetryOutcome, Error> {
        let span = tracing::info_span!(
            "factum.projection.retry",
            projection = P::NAME,
            version = P::VERSION,
            stream = stream_id
        );
        let _entered = span.enter();
        let mut events: Vec<RecordedEvent> = Vec::new();
        let mut handled = 0;
        loop {
            let pool = self.store().pool().clone();
            let mut transaction = pool.begin().await.map_err(|e| self.fail(e))?;
            let Some(stream_version) = self.first_parked(&mut transaction, stream_id).await? else {
                transaction.commit().await.map_err(|e| self.fail(e))?;
                tracing::info!(handled, "parked stream drained");
                return Ok(RetryOutcome::Drained { handled });
            };
            if !events.iter().any(|e| e.stream_version == stream_version) {
                events = self
                    .store()
                    .read_stream(stream_id, stream_version..)
                    .await?;
            }
            let Some(event) = events.iter().find(|e| e.stream_version == stream_version) else {
                return Err(Error::Backend(
                    format!(
                        "the dead-letter queue of `{}` names {stream_id}@{stream_version}, which the store does not hold",
                        P::NAME
                    )
                    .into(),
                ));
            };
            let projection = self.projection_mut();
            projection.discard();
            let mut result = projection.handle(event, &mut transaction).await;
            if result.is_ok() {
                result = projection.flush(&mut transaction).await;
            }
            if let Err(error) = result {
                projection.discard();
                drop(transaction);
                sqlx::query(AssertSqlSafe(self.sql.record_failure.clone()))
                    .bind(P::NAME)
                    .bind(version(P::VERSION))
                    .bind(stream_id)
                    .bind(to_i64(stream_version))
                    .bind(error.to_string())
                    .execute(self.store().pool())
                    .await
                    .map_err(|e| self.fail(e))?;
                tracing::warn!(stream_version, %error, "parked event failed again");
                return Ok(RetryOutcome::Stopped {
                    handled,
                    stream_version,
                    error,
                });
            }
            sqlx::query(AssertSqlSafe(self.sql.unpark.clone()))
                .bind(P::NAME)
                .bind(version(P::VERSION))
                .bind(stream_id)
                .bind(to_i64(stream_version))
                .execute(&mut *transaction)
                .await
                .map_err(|e| self.fail(e))?;
            transaction.commit().await.map_err(|e| self.fail(e))?;
            handled += 1;
        }
    }

    /// Skips the first parked event of a stream: it stays in the queue, marked skipped (for
    /// the audit trail), and is never applied. The stream's later events stay parked until
    /// [`ProjectionRunner::retry_parked`]. Returns the skipped event's version (`None`: the
    /// stream is not parked).
    ///
    /// # Errors
    /// A store error.
    pub async fn skip_parked(&mut self, stream_id: &str) -> Result<Option<u64>, Error> {
        let mut transaction = self
            .store()
            .pool()
            .begin()
            .await
            .map_err(|e| self.fail(e))?;
        let Some(stream_version) = self.first_parked(&mut transaction, stream_id).await? else {
            return Ok(None);
        };
        sqlx::query(AssertSqlSafe(self.sql.skip.clone()))
            .bind(P::NAME)
            .bind(version(P::VERSION))
            .bind(stream_id)
            .bind(to_i64(stream_version))
            .execute(&mut *transaction)
            .await
            .map_err(|e| self.fail(e))?;
        transaction.commit().await.map_err(|e| self.fail(e))?;
        tracing::warn!(
            projection = P::NAME,
            version = P::VERSION,
            stream = stream_id,
            stream_version,
            "parked event skipped: it will never be applied"
        );
        Ok(Some(stream_version))
    }

    /// The version of a stream's first parked event, with the checkpoint row locked for the
    /// transaction (so the runner does not apply a batch meanwhile).
    async fn first_parked(
        &self,
        transaction: &mut PgConnection,
        stream_id: &str,
    ) -> Result<Option<u64>, Error> {
        self.lock_checkpoint(transaction, &[]).await?;
        let first: Option<i64> = sqlx::query_scalar(AssertSqlSafe(self.sql.first_parked.clone()))
            .bind(P::NAME)
            .bind(version(P::VERSION))
            .bind(stream_id)
            .fetch_optional(&mut *transaction)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(first.map(to_u64))
    }
}
