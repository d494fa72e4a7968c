//! Importing an export into an empty PostgreSQL store: one transaction, the event table locked
//! against appends, the rows sent with `COPY` in the export's (feed) order. Positions and
//! transaction ids are the target's own: the whole import is one transaction, and positions
//! follow the rows, so the feed delivers the events in the exported order.

use std::io::BufRead;

use sqlx::AssertSqlSafe;

use super::PostgresStore;
use crate::error::{Error, Result};
use crate::store::transfer::{copy_line, read_export};

/// Bytes sent to `COPY` at a time.
const COPY_CHUNK: usize = 1 << 20;

impl PostgresStore {
    /// Imports an export (`factum::store::transfer::export`, `factum export`) into this store,
    /// which must hold no events: the same event ids, stream versions, recording times and
    /// feed order, in one transaction (all or nothing). Every line is checked before anything
    /// is written. `progress` is called with the events sent so far. Returns how many were
    /// imported.
    ///
    /// # Errors
    /// [`Error::InvalidImport`] naming the first bad line, [`Error::ImportTargetNotEmpty`], or
    /// a database error.
    pub async fn import(&self, input: impl BufRead, mut progress: impl FnMut(u64)) -> Result<u64> {
        let events = read_export(input)?;
        let s = self.inner.schema.quoted();
        let fail = |e| self.fail(e);
        let mut transaction = self.inner.pool.begin().await.map_err(fail)?;
        // Appends wait until the import commits (or see a non-empty store after it).
        sqlx::query(AssertSqlSafe(format!(
            "LOCK TABLE {s}.events IN SHARE ROW EXCLUSIVE MODE"
        )))
        .execute(&mut *transaction)
        .await
        .map_err(fail)?;
        let occupied: bool = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT EXISTS (SELECT 1 FROM {s}.events)"
        )))
        .fetch_one(&mut *transaction)
        .await
        .map_err(fail)?;
        if occupied {
            return Err(Error::ImportTargetNotEmpty {
                location: format!("schema {}", self.schema()),
            });
        }
        let mut copy = transaction
            .copy_in_raw(&format!(
                "COPY {s}.events (stream_id, stream_version, aggregate_type, event_id, event_type,
                     schema_version, payload, metadata, correlation_id, causation_id, actor,
                     recorded_at)
                 FROM STDIN (FORMAT text)"
            ))
            .await
            .map_err(fail)?;
        let mut chunk = String::with_capacity(COPY_CHUNK + 4096);
        let mut sent = 0;
        for event in &events {
            copy_line(event, &mut chunk)?;
            sent += 1;
            if chunk.len() >= COPY_CHUNK {
                copy.send(chunk.as_bytes()).await.map_err(fail)?;
                chunk.clear();
                progress(sent);
            }
        }
        if !chunk.is_empty() {
            copy.send(chunk.as_bytes()).await.map_err(fail)?;
        }
        let copied = copy.finish().await.map_err(fail)?;
        transaction.commit().await.map_err(fail)?;
        progress(sent);
        self.notify_subscribers();
        tracing::info!(schema = self.schema(), events = copied, "export imported");
        Ok(copied)
    }
}
