//! Importing an export into an empty SQLite store: one `BEGIN IMMEDIATE` transaction (SQLite's
//! write lock keeps appends out), the rows inserted in the export's (feed) order, so positions
//! follow it.

use std::io::BufRead;

use super::{SqliteStore, backend};
use crate::error::{Error, Result};
use crate::store::transfer::read_export;

impl SqliteStore {
    /// Imports an export (`factum::store::transfer::export`, `factum export`) into this store,
    /// which must hold no events: the same event ids, stream versions, recording times and
    /// feed order, in one transaction (all or nothing). Every line is checked before anything
    /// is written. `progress` is called with the events inserted so far. Returns how many were
    /// imported. Each event keeps the tenant its line names (an export of a store across
    /// tenants names each event's); through a tenant's store ([`SqliteStore::for_tenant`]),
    /// the events naming none become that tenant's, and one naming another tenant is refused.
    ///
    /// # Errors
    /// [`Error::InvalidImport`] naming the first bad line (or an event of another tenant than
    /// the store's), [`Error::ImportTargetNotEmpty`], or a database error.
    pub async fn import(&self, input: impl BufRead, mut progress: impl FnMut(u64)) -> Result<u64> {
        let events = read_export(input, self.tenancy())?;
        let mut transaction = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        let occupied: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM events)")
            .fetch_one(&mut *transaction)
            .await
            .map_err(backend)?;
        if occupied {
            return Err(Error::ImportTargetNotEmpty {
                location: self.location().to_owned(),
            });
        }
        let mut inserted = 0;
        for event in &events {
            let metadata =
                serde_json::to_string(&event.metadata).map_err(|e| Error::Backend(e.into()))?;
            sqlx::query(
                "INSERT INTO events (stream_id, stream_version, aggregate_type, event_id,
                     event_type, schema_version, payload, metadata, correlation_id, causation_id,
                     actor, recorded_at, tenant)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )
            .bind(&event.stream_id)
            .bind(crate::store::backend::to_i64(event.stream_version))
            .bind(&event.aggregate_type)
            .bind(event.event_id.to_string())
            .bind(&event.event_type)
            .bind(i64::from(event.schema_version))
            .bind(event.event.as_str())
            .bind(metadata)
            .bind(event.correlation_id.to_string())
            .bind(event.causation_id.to_string())
            .bind(event.actor.as_deref())
            .bind(event.recorded_at)
            .bind(event.tenant.as_deref().unwrap_or(""))
            .execute(&mut *transaction)
            .await
            .map_err(backend)?;
            inserted += 1;
            if inserted % 1000 == 0 {
                progress(inserted);
            }
        }
        transaction.commit().await.map_err(backend)?;
        progress(inserted);
        self.notifier.notify();
        tracing::info!(
            location = self.location(),
            events = inserted,
            "export imported"
        );
        Ok(inserted)
    }
}
