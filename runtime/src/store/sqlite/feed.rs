//! The global feed on SQLite, as the runners read it: by position alone (SQLite commits one
//! transaction at a time, so positions are given in commit order).

use super::rows::{
    ENVELOPE_COLUMNS, ORIGIN_COLUMNS, SOURCE_COLUMNS, envelope_or_defect, origin_from_row,
    source_from_row,
};
use super::{SqliteStore, backend};
use crate::envelope::EnvelopeFields;
use crate::error::Result;
use crate::store::backend::{stored_u64, to_i64};
use crate::store::{FeedBatch, FeedPosition, FeedQuery, runner_envelopes};

impl SqliteStore {
    /// The feed as runners read it ([`Backend::read_feed_parking`](crate::store::sql::Backend)): an
    /// event whose metadata does not read is delivered with empty metadata and named in the
    /// batch's `undecodable`.
    pub(crate) async fn read_feed_parking(&self, query: &FeedQuery) -> Result<FeedBatch> {
        if query.limit == 0 {
            return Ok(FeedBatch::new(Vec::new(), query.after));
        }
        let after = to_i64(query.after.position);
        let limit = to_i64(query.limit as u64);
        // One read transaction: the head and the events from the same snapshot.
        let mut transaction = self.pool.begin().await.map_err(backend)?;
        let types = query
            .event_types
            .as_ref()
            .map(|types| serde_json::to_string(types).unwrap_or_else(|_| "[]".to_owned()));
        let columns = match query.fields {
            EnvelopeFields::Source => SOURCE_COLUMNS,
            EnvelopeFields::Origin => ORIGIN_COLUMNS,
            EnvelopeFields::All => ENVELOPE_COLUMNS,
        };
        let rows = match &types {
            Some(types) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {columns} FROM events
                     WHERE position > ?1 AND event_type IN (SELECT value FROM json_each(?3))
                       AND (?4 IS NULL OR tenant = ?4)
                     ORDER BY position LIMIT ?2"
                )))
                .bind(after)
                .bind(limit)
                .bind(types)
                .bind(self.scope())
                .fetch_all(&mut *transaction)
                .await
            }
            None => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {columns} FROM events
                     WHERE position > ?1 AND (?3 IS NULL OR tenant = ?3)
                     ORDER BY position LIMIT ?2"
                )))
                .bind(after)
                .bind(limit)
                .bind(self.scope())
                .fetch_all(&mut *transaction)
                .await
            }
        }
        .map_err(backend)?;
        let head: i64 = sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM events")
            .fetch_one(&mut *transaction)
            .await
            .map_err(backend)?;
        transaction.commit().await.map_err(backend)?;
        let (mut events, undecodable, stopped) = match query.fields {
            EnvelopeFields::Source => {
                runner_envelopes(&rows, |row| Ok((source_from_row(row)?, None)))?
            }
            EnvelopeFields::Origin => {
                runner_envelopes(&rows, |row| Ok((origin_from_row(row)?, None)))?
            }
            EnvelopeFields::All => runner_envelopes(&rows, envelope_or_defect)?,
        };
        let next = match events.last() {
            Some(last) if stopped || events.len() >= query.limit => last.feed_position(),
            _ => {
                let head = stored_u64(head, "a global position")?;
                FeedPosition::new(head, head).max(query.after)
            }
        };
        self.open_pii(&mut events).await?;
        let mut batch = FeedBatch::new(events, next);
        batch.undecodable = undecodable;
        Ok(batch)
    }
}
