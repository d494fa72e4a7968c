//! Importing an export into an empty PostgreSQL store: one transaction, the event table locked
//! against appends, the rows sent with `COPY` in the export's (feed) order as the lines are read
//! and checked (the server stores one chunk while the next is read). Positions and
//! transaction ids are the target's own: the whole import is one transaction, and positions
//! follow the rows, so the feed delivers the events in the exported order.

use std::io::BufRead;

use sqlx::AssertSqlSafe;

use super::PostgresStore;
use crate::error::{Error, Result};
use crate::store::transfer::{ExportReader, copy_line};

/// Bytes sent to `COPY` at a time.
const COPY_CHUNK: usize = 1 << 20;

impl PostgresStore {
    /// Imports an export (`factum::store::transfer::export`, `factum export`) into this store,
    /// which must hold no events: the same event ids, stream versions, recording times and
    /// feed order, in one transaction (all or nothing): every line is checked as it is sent,
    /// and a bad line aborts the transaction, so nothing of the import is ever visible.
    /// `progress` is called with the events sent so far. Returns how many were imported.
    /// Each event keeps the tenant its line names (an export of a store across tenants names
    /// each event's; see [`PostgresStore::across_tenants`]).
    ///
    /// # Errors
    /// [`Error::InvalidImport`] naming the first bad line, [`Error::ImportTargetNotEmpty`], or
    /// a database error.
    pub async fn import(&self, input: impl BufRead, mut progress: impl FnMut(u64)) -> Result<u64> {
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
                     recorded_at, tenant)
                 FROM STDIN (FORMAT text)"
            ))
            .await
            .map_err(|error| {
                // 0A000: COPY FROM into a table whose row-level security binds the role.
                if error
                    .as_database_error()
                    .is_some_and(|e| e.code().as_deref() == Some("0A000"))
                {
                    Error::InvalidConfig(format!(
                        "importing into schema {} needs a role that row-level security does not bind (a superuser, or a role with BYPASSRLS): the schema forces it on its events, for its owner too ({error})",
                        self.schema()
                    ))
                } else {
                    self.fail(error)
                }
            })?;
        let mut chunk = String::with_capacity(COPY_CHUNK + 4096);
        let mut sent = 0;
        for event in ExportReader::new(input, self.tenancy()) {
            if let Err(error) = event.and_then(|event| copy_line(&event, &mut chunk)) {
                // Nothing of it is committed; the server drops what it received.
                if let Err(abort) = copy.abort(error.to_string()).await {
                    tracing::warn!(%abort, "could not abort the import's COPY");
                }
                return Err(error);
            }
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
